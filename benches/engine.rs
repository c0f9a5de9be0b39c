//! Criterion benches of the engine's hot stages: WebSocket frames (encode, decode, masking),
//! fanning one frame out to 10 000 in-memory outboxes, the cross-core queue between two
//! threads, and the history lookup a resume does.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use crossbeam_queue::ArrayQueue;
use herald::cursor::Cursor;
use herald::frames::Frame;
use herald::proto::ws::frame::apply_mask;
use herald::proto::ws::{Opcode, WsReader, encode_frame};
use herald::pubsub::history::History;
use herald::shard::outbox::Outbox;

fn websocket(c: &mut Criterion) {
    let payload = vec![b'x'; 128];
    let mut g = c.benchmark_group("ws");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode_frame_128B", |b| b.iter(|| encode_frame(Opcode::Text, black_box(&payload))));
    let mut data = vec![0u8; 64 * 1024];
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("mask_64KiB", |b| b.iter(|| apply_mask(black_box(&mut data), [1, 2, 3, 4], 0)));
    // A client message: masked text frame of 128 bytes.
    let mut frame = vec![0x81, 0x80 | 126, 0, 128, 9, 8, 7, 6];
    let mut p = payload.clone();
    apply_mask(&mut p, [9, 8, 7, 6], 0);
    frame.extend_from_slice(&p);
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode_frame_128B", |b| {
        let mut reader = WsReader::new(1 << 20);
        let mut events = Vec::with_capacity(1);
        b.iter(|| {
            let mut buf = frame.clone();
            events.clear();
            reader.read(black_box(&mut buf), &mut events).unwrap()
        })
    });
    g.finish();
}

fn fanout(c: &mut Criterion) {
    let frame = Frame::new("scores".into(), Cursor::new(1, 1), None, Bytes::from(vec![b'x'; 128]), 0);
    let mut outboxes: Vec<Outbox> = (0..10_000).map(|_| Outbox::default()).collect();
    let mut g = c.benchmark_group("fanout");
    g.throughput(Throughput::Elements(outboxes.len() as u64));
    g.bench_function("one_frame_to_10000_outboxes", |b| {
        b.iter(|| {
            for o in outboxes.iter_mut() {
                o.push(frame.sse(true));
            }
            for o in outboxes.iter_mut() {
                o.clear();
            }
        })
    });
    g.finish();
}

fn cross_core_queue(c: &mut Criterion) {
    let mut g = c.benchmark_group("mesh");
    const N: u64 = 100_000;
    g.throughput(Throughput::Elements(N));
    g.bench_function("spsc_100k_messages_between_two_threads", |b| {
        b.iter_custom(|iters| {
            let mut total = std::time::Duration::ZERO;
            for _ in 0..iters {
                let q = Arc::new(ArrayQueue::<u64>::new(16 * 1024));
                let consumer = {
                    let q = q.clone();
                    std::thread::spawn(move || {
                        let _ = core_affinity::set_for_current(core_affinity::CoreId { id: 1 });
                        let mut got = 0;
                        while got < N {
                            if q.pop().is_some() {
                                got += 1;
                            } else {
                                std::hint::spin_loop();
                            }
                        }
                    })
                };
                let _ = core_affinity::set_for_current(core_affinity::CoreId { id: 0 });
                let start = Instant::now();
                for i in 0..N {
                    let mut v = i;
                    while let Err(back) = q.push(v) {
                        v = back;
                        std::hint::spin_loop();
                    }
                }
                consumer.join().unwrap();
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
}

fn history(c: &mut Criterion) {
    let mut h = History::default();
    let now = Instant::now();
    for s in 1..=1000 {
        h.push(Arc::new(Frame::new("t".into(), Cursor::new(1, s), None, Bytes::from_static(b"x"), 0)), now, 1000);
    }
    let mut g = c.benchmark_group("history");
    g.throughput(Throughput::Elements(1));
    g.bench_function("resume_100_behind_of_1000", |b| b.iter(|| h.since(black_box(900), 1000)));
    g.finish();
}

criterion_group!(benches, websocket, fanout, cross_core_queue, history);
criterion_main!(benches);
