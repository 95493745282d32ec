//! From the request path, still percent-encoded, to a relative path made
//! only of plain names, or a refusal before the disk is consulted (400).

use std::path::{Component, PathBuf};

/// Why a request path was refused before the disk was consulted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(super) enum PathError {
    #[error("malformed percent escape")]
    BadEscape,
    #[error("segment is not UTF-8")]
    NotUtf8,
    #[error("dot segment")]
    DotSegment,
    #[error("segment contains '/', '\\' or NUL")]
    ForbiddenByte,
    #[error("name longer than the file system allows")]
    TooLong,
}

/// The longest file name Linux and the BSDs accept (`NAME_MAX`), and the
/// longest path (`PATH_MAX`, with room for the root in front).
const NAME_MAX: usize = 255;
const RELATIVE_PATH_MAX: usize = 3072;

/// Turns the encoded request path into a relative path made only of
/// `Component::Normal` parts.
pub(super) fn decode_path(rest: &str) -> Result<PathBuf, PathError> {
    let mut relative = PathBuf::new();
    // Splitting before decoding keeps `%2f` inside its segment, where the
    // check below refuses it, instead of letting it create new segments.
    for raw in rest.split('/').filter(|raw| !raw.is_empty()) {
        let decoded = percent_decode(raw.as_bytes())?;
        let segment = String::from_utf8(decoded).map_err(|_| PathError::NotUtf8)?;
        if segment == "." || segment == ".." {
            return Err(PathError::DotSegment);
        }
        if segment.contains(['/', '\\', '\0']) {
            return Err(PathError::ForbiddenByte);
        }
        if segment.len() > NAME_MAX {
            return Err(PathError::TooLong);
        }
        relative.push(segment);
    }
    if relative.as_os_str().len() > RELATIVE_PATH_MAX {
        return Err(PathError::TooLong);
    }
    // Belt and braces: what was pushed can only be plain names, so `join`
    // on the root can neither climb out nor restart at `/`.
    if relative
        .components()
        .all(|component| matches!(component, Component::Normal(_)))
    {
        Ok(relative)
    } else {
        Err(PathError::DotSegment)
    }
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits is an error
/// (a lenient decoder would pass it through and make `%%2e` ambiguous).
fn percent_decode(raw: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter();
    while let Some(&byte) = bytes.next() {
        if byte == b'%' {
            let high = bytes.next().and_then(|b| hex_value(*b));
            let low = bytes.next().and_then(|b| hex_value(*b));
            match (high, low) {
                (Some(high), Some(low)) => out.push(high << 4 | low),
                _ => return Err(PathError::BadEscape),
            }
        } else {
            out.push(byte);
        }
    }
    Ok(out)
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
#[path = "path_prop.rs"]
mod prop;

#[cfg(test)]
mod tests {
    // Tests may unwrap: a failure is a test failure.
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn decoding_refuses_every_traversal_shape() {
        for bad in [
            "/../x",
            "/%2e%2e/x",
            "/%2E%2E/x",
            "/%2E./x",
            "/.%2e/x",
            "/..%2fx",
            "/a/..%2F..%2Fx",
            "/..%5cx",
            "/a%5c..%5c..%5cx",
            "/x%00",
            "/./x",
            "/%zz",
            "/%2",
            "/%ff",
        ] {
            assert!(decode_path(bad).is_err(), "{bad} was accepted");
        }
        assert_eq!(decode_path("").unwrap(), PathBuf::new());
        assert_eq!(
            decode_path("//a%20b///c.txt").unwrap(),
            PathBuf::from("a b/c.txt")
        );
        assert_eq!(decode_path("/..x/x..").unwrap(), PathBuf::from("..x/x.."));
    }
}
