//! Raw SHA-256 throughput of the crypto backend (aws-lc) on one core: over 1 MiB blocks in
//! memory (the ceiling for `custos fw verify`, to compare with `openssl speed -evp sha256`),
//! and, given a file argument: reading and hashing on one thread at several buffer sizes, the
//! read alone, and a reader-thread pipeline (which hashes data another core just wrote, and
//! is slower here; `custos fw` therefore hashes on the reading thread).
#![allow(clippy::expect_used)]
use std::io::Read;

fn main() {
    let mut buf = vec![0x5au8; 1 << 20];
    let n = 2048;
    let t = std::time::Instant::now();
    let mut c = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for _ in 0..n {
        c.update(&buf);
    }
    let d = c.finish();
    let s = t.elapsed().as_secs_f64();
    println!(
        "aws-lc SHA-256 in memory, 1 core: {:.0} MiB/s ({:02x})",
        n as f64 / s,
        d.as_ref()[0]
    );
    if let Some(p) = std::env::args().nth(1) {
        for size in [8usize << 10, 32 << 10, 128 << 10, 512 << 10] {
            let mut small = vec![0u8; size];
            let t = std::time::Instant::now();
            let mut f = std::fs::File::open(&p).expect("file");
            let mut c = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
            let mut total = 0usize;
            loop {
                let k = f.read(&mut small).expect("read");
                if k == 0 {
                    break;
                }
                total += k;
                c.update(&small[..k]);
            }
            let _ = c.finish();
            println!(
                "read + hash, one thread, {} KiB reads: {:.0} MiB/s",
                size >> 10,
                total as f64 / (1 << 20) as f64 / t.elapsed().as_secs_f64()
            );
        }
        let t = std::time::Instant::now();
        let mut f = std::fs::File::open(&p).expect("file");
        let mut c = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut total = 0usize;
        loop {
            let k = f.read(&mut buf).expect("read");
            if k == 0 {
                break;
            }
            total += k;
            c.update(&buf[..k]);
        }
        let _ = c.finish();
        let s = t.elapsed().as_secs_f64();
        println!(
            "read + hash, one thread: {:.0} MiB/s",
            total as f64 / (1 << 20) as f64 / s
        );
        let t = std::time::Instant::now();
        let mut f = std::fs::File::open(&p).expect("file");
        while f.read(&mut buf).expect("read") > 0 {}
        println!(
            "read only: {:.0} MiB/s",
            total as f64 / (1 << 20) as f64 / t.elapsed().as_secs_f64()
        );
        let mib = total as f64 / (1 << 20) as f64;
        println!(
            "pipeline, hashing the read data: {:.0} MiB/s",
            mib / pipeline(&p, false)
        );
        println!(
            "pipeline, hashing a local buffer: {:.0} MiB/s",
            mib / pipeline(&p, true)
        );
    }
}

fn pipeline(p: &str, local: bool) -> f64 {
    const CHUNK: usize = 1 << 20;
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(3);
    let (empty_tx, empty_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
    for _ in 0..4 {
        empty_tx.send(vec![0u8; CHUNK]).expect("send");
    }
    let mut f = std::fs::File::open(p).expect("file");
    let t = std::time::Instant::now();
    let r = std::thread::spawn(move || loop {
        let mut b = empty_rx.recv().expect("recv");
        b.resize(CHUNK, 0);
        let k = f.read(&mut b).expect("read");
        b.truncate(k);
        full_tx.send(b).expect("send");
        if k == 0 {
            return;
        }
    });
    let mut c = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let own = vec![1u8; CHUNK];
    loop {
        let b = full_rx.recv().expect("recv");
        if b.is_empty() {
            break;
        }
        if local {
            c.update(&own[..b.len()]);
        } else {
            c.update(&b);
        }
        let _ = empty_tx.send(b);
    }
    r.join().expect("join");
    t.elapsed().as_secs_f64()
}
