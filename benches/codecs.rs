//! Criterion benches of the pure codecs on the hot path: request-head parsing, chunked
//! body decoding and SSE event encoding.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use herald::proto::http1::{BodyDecoder, parse_head};
use herald::proto::sse;
use std::hint::black_box;

fn head_parse(c: &mut Criterion) {
    let raw = b"GET /sub/scores?types=goal,card HTTP/1.1\r\nHost: herald.example\r\nAccept: text/event-stream\r\nUser-Agent: bench/1.0\r\nLast-Event-ID: 6a1f03c200000001-42\r\nCache-Control: no-cache\r\nConnection: keep-alive\r\n\r\n";
    let mut g = c.benchmark_group("http1");
    g.throughput(Throughput::Bytes(raw.len() as u64));
    g.bench_function("parse_head_7_headers", |b| b.iter(|| parse_head(black_box(raw)).unwrap().unwrap()));
    g.finish();
}

fn chunked_decode(c: &mut Criterion) {
    let mut body = Vec::new();
    for _ in 0..64 {
        body.extend_from_slice(b"80\r\n");
        body.extend_from_slice(&[b'x'; 128]);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let mut g = c.benchmark_group("http1");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("chunked_decode_8KiB", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(8192);
            let mut d = BodyDecoder::chunked(1 << 20);
            d.decode(black_box(&body), &mut out).unwrap();
            out
        })
    });
    g.finish();
}

fn sse_encode(c: &mut Criterion) {
    let data = vec![b'x'; 128];
    let mut g = c.benchmark_group("sse");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode_event_128B", |b| {
        b.iter(|| sse::event_chunk(Some(black_box("6a1f03c200000001-42")), Some("score"), black_box(&data)))
    });
    g.finish();
}

criterion_group!(benches, head_parse, chunked_decode, sse_encode);
criterion_main!(benches);
