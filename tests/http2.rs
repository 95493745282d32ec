//! HTTP/2 over HTTPS with a real client (curl): many streams on one
//! connection, small and large responses, each whole and in its place.
//! The daemon gathers the small writes of an HTTP/2 connection into one
//! TLS write (actors/src/batched_writes.rs); these tests would see a
//! response cut, lost, stuck or mixed with another.

use std::fs;
use std::process::Command;

use std::io::{Read as _, Write as _};

use crate::util::{h2, toml_path, wait_until, Clace, DEADLINE};

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

/// User plus system CPU time of a process, in clock ticks (1/100 s).
fn cpu_ticks(pid: i32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command name, which ends at the last ')'.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after ')'.
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// Backpressure through the gathering layer: answers held while the
/// client reads nothing all arrive, whole, once it reads. (The state where
/// a held flush meets a full socket is driven step by step in
/// batched_writes.rs' unit tests.)
#[test]
fn a_client_that_stops_reading_gets_every_answer_once_it_reads() {
    let clace = Clace::new();
    let site = clace.root().join("site");
    fs::create_dir_all(&site).expect("mkdir");
    // Each response is one small write the daemon gathers (under 8 KiB).
    const SMALL: usize = 6_000;
    fs::write(site.join("small.bin"), content(8, SMALL)).expect("write");
    clace.write_config(&format!(
        "[http]\nport = 0\n\n[https]\nport = 0\n\n[[route]]\npath = \"/site\"\nstatic = {}\n",
        toml_path(&site)
    ));
    let mut proc = clace.spawn(&["serve"]);
    let https = proc.listening_addr("https");
    let pid = proc.pid().as_raw();

    let mut conn = crate::tls_util::handshake_with(
        https,
        &crate::tls_util::Hello::sni(Some("localhost")).alpn(&["h2"]),
    )
    .expect("handshake");
    assert_eq!(conn.alpn_str().as_deref(), Some("h2"));
    // Windows wide open (SETTINGS_INITIAL_WINDOW_SIZE and the
    // connection's), so flow control never stops the daemon: only its
    // full socket does.
    let max_window = (1u32 << 31) - 1;
    let mut out = h2::preface_with(&[(4, max_window)]);
    out.extend(h2::frame(8, 0, 0, &(max_window - 65_535).to_be_bytes()));
    conn.stream.write_all(&out).expect("send");

    // The client asks for 400 files (2.4 MB of answers) in batches of 8
    // with a PING each, and reads nothing: the daemon's socket fills up
    // and its answers wait. Then the daemon must go quiet: a connection
    // task that woke itself to retry would burn a core (100 ticks per
    // second) and never be still for 300 ms.
    let (mut asked, mut pings) = (0u32, 0u32);
    while asked < 400 {
        let mut more = h2::frame(6, 0, 0, &u64::from(pings).to_be_bytes());
        pings += 1;
        for _ in 0..8 {
            more.extend(h2::frame(
                1,
                0x5,
                1 + 2 * asked,
                &h2::get("/site/small.bin"),
            ));
            asked += 1;
        }
        conn.stream.write_all(&more).expect("send");
    }
    let (mut last, mut since) = (cpu_ticks(pid), std::time::Instant::now());
    let quiet = wait_until(DEADLINE, || {
        let now = cpu_ticks(pid);
        if now != last {
            (last, since) = (now, std::time::Instant::now());
        }
        since.elapsed() >= std::time::Duration::from_millis(300)
    });
    assert!(
        quiet,
        "the daemon kept using CPU while its one client read nothing (busy loop)"
    );

    // Then everything arrives: every response whole, every PING answered.
    let (mut data, mut heads, mut acks) = (0usize, 0u32, 0u32);
    let mut head = [0u8; 9];
    while heads < asked || acks < pings || data < asked as usize * SMALL {
        conn.stream
            .read_exact(&mut head)
            .expect("read a frame head");
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        conn.stream.read_exact(&mut payload).expect("read a frame");
        match head[3] {
            0 => data += len,
            1 => heads += 1,
            6 if head[4] & 1 == 1 => acks += 1,
            7 => panic!("GOAWAY: {payload:?}"),
            _ => {}
        }
    }
    assert_eq!(data, asked as usize * SMALL, "the bodies' bytes");
}
