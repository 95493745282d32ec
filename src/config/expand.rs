//! `$VAR` / `${VAR}` expansion in path values, with `CL_HOME` always known.

use std::path::{Path, PathBuf};

/// Expands `$NAME` and `${NAME}` using `lookup`; `$$` is a literal `$`.
/// Returns the name of the first variable that is not set.
pub fn expand_vars(value: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        let (name, tail) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], &braced[end + 1..]),
                None => return Err(format!("${{{braced}")),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        if name.is_empty() {
            // A lone `$` is kept as written.
            out.push('$');
            rest = after;
            continue;
        }
        match lookup(name) {
            Some(v) => out.push_str(&v),
            None => return Err(name.to_string()),
        }
        rest = tail;
    }
    out.push_str(rest);
    Ok(out)
}

/// Expands variables, then makes a relative path relative to `home`.
pub fn expand_path(value: &str, home: &Path) -> Result<PathBuf, String> {
    let path = PathBuf::from(expand_value(value, home)?);
    Ok(if path.is_absolute() {
        path
    } else {
        home.join(path)
    })
}

/// `value` with `$CL_HOME` (as `home`) and environment variables expanded;
/// the `Err` names the first variable that is not set.
pub fn expand_value(value: &str, home: &Path) -> Result<String, String> {
    let home_str = home.to_string_lossy().into_owned();
    let lookup = move |name: &str| {
        if name == "CL_HOME" {
            Some(home_str.clone())
        } else {
            std::env::var(name).ok()
        }
    };
    expand_vars(value, &lookup)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<String> {
        match name {
            "CL_HOME" => Some("/h".into()),
            "X" => Some("x".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_both_forms() {
        assert_eq!(expand_vars("$CL_HOME/a", &lookup).as_deref(), Ok("/h/a"));
        assert_eq!(
            expand_vars("${CL_HOME}x/$X", &lookup).as_deref(),
            Ok("/hx/x")
        );
        assert_eq!(expand_vars("a$$b", &lookup).as_deref(), Ok("a$b"));
        assert_eq!(expand_vars("cost $", &lookup).as_deref(), Ok("cost $"));
    }

    #[test]
    fn names_the_unset_variable() {
        assert_eq!(expand_vars("$NOPE/x", &lookup), Err("NOPE".to_string()));
    }

    #[test]
    fn relative_paths_are_under_home() {
        assert_eq!(
            expand_path("site", Path::new("/h")),
            Ok(PathBuf::from("/h/site"))
        );
    }
}
