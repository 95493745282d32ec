//! HTTP/2 over HTTPS with a real client (curl): many streams on one
//! connection, small and large responses, each whole and in its place.
//! The daemon gathers the small writes of an HTTP/2 connection into one
//! TLS write (actors/src/batched_writes.rs); these tests would see a
//! response cut, lost, stuck or mixed with another.

use std::fs;
use std::process::Command;

use crate::util::{toml_path, Clace};

/// Bytes no other file of the test has: a simple generator seeded per file.
fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn many_streams_on_one_connection_each_get_their_own_bytes() {
    let clace = Clace::new();
    let site = clace.root().join("site");
    let out = clace.root().join("out");
    fs::create_dir_all(&site).expect("mkdir");
    fs::create_dir_all(&out).expect("mkdir");
    // Below and above h2's 256-byte chaining threshold, around one TLS
    // record, the batch bound and the pass-through size, and a body far
    // larger than the stream's flow-control window.
    let sizes = [
        0usize, 100, 255, 256, 1024, 5000, 9000, 20_000, 40_000, 300_000, 2_100_000,
    ];
    let files: Vec<(String, Vec<u8>)> = sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| (format!("f{i}.bin"), content(i as u64 + 1, len)))
        .collect();
    for (name, bytes) in &files {
        fs::write(site.join(name), bytes).expect("write");
    }
    clace.write_config(&format!(
        "[http]\nport = 0\n\n[https]\nport = 0\n\n[[route]]\npath = \"/site\"\nstatic = {}\n",
        toml_path(&site)
    ));
    let mut proc = clace.spawn(&["serve"]);
    let https = proc.listening_addr("https");

    // 8 rounds of every file plus a missing one, all at once.
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "-k",
        "--http2",
        "--parallel",
        "--parallel-max",
        "100",
        "--max-time",
        "30",
        "-w",
        "%{http_version} %{response_code} %{num_connects} %{size_download}\\n",
    ]);
    let mut expected = Vec::new();
    for round in 0..8 {
        for (i, (name, bytes)) in files.iter().enumerate() {
            let path = out.join(format!("{round}-{i}"));
            cmd.arg("-o").arg(&path);
            cmd.arg(format!("https://127.0.0.1:{}/site/{name}", https.port()));
            expected.push((path, Some(bytes)));
        }
        let path = out.join(format!("{round}-missing"));
        cmd.arg("-o").arg(&path);
        cmd.arg(format!("https://127.0.0.1:{}/site/none.bin", https.port()));
        expected.push((path, None));
    }
    let run = cmd.output().expect("run curl");
    let report = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "curl failed: {}\n{report}",
        String::from_utf8_lossy(&run.stderr)
    );
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(
        lines.len(),
        expected.len(),
        "one line per transfer:\n{report}"
    );
    let mut connects = 0;
    let (mut ok, mut missing) = (0, 0);
    for line in &lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields.first(), Some(&"2"), "not HTTP/2: {line}");
        match fields.get(1) {
            Some(&"200") => ok += 1,
            Some(&"404") => missing += 1,
            other => panic!("status {other:?}: {line}"),
        }
        connects += fields
            .get(2)
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(99);
    }
    assert_eq!((ok, missing), (8 * files.len(), 8), "{report}");
    assert_eq!(connects, 1, "every stream on one connection:\n{report}");
    for (path, want) in expected {
        let got = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        match want {
            Some(bytes) => assert!(
                got == *bytes,
                "{}: {} bytes, expected {} (another response's bytes or a cut one)",
                path.display(),
                got.len(),
                bytes.len()
            ),
            // The 404's short text, not a file's bytes.
            None => assert!(
                got.len() < 200 && std::str::from_utf8(&got).is_ok(),
                "{}: the 404's body is {} bytes",
                path.display(),
                got.len()
            ),
        }
    }
}
