//! Taking turns on a worker: `yield_now` that really lets the other tasks run first.
//!
//! monoio puts a task that wakes itself while it runs back at the *front* of its run queue, so
//! the usual `wake_by_ref(); Pending` yield runs the same task again at once: a long fanout
//! "yielding" between chunks would still starve publishers, accepts and heartbeats until it
//! is done. Here a yielding task hands its waker to the worker's relay task instead; the relay
//! is woken from outside its own poll, so it queues behind everything already waiting, and it
//! wakes the yielders from there — behind those tasks too.

use std::cell::RefCell;
use std::future::poll_fn;
use std::task::{Poll, Waker};

#[derive(Default)]
struct Relay {
    /// Tasks waiting for their turn to come back.
    yielded: Vec<Waker>,
    /// The relay task, while it waits for yielders.
    relay: Option<Waker>,
    running: bool,
}

thread_local! {
    static RELAY: RefCell<Relay> = RefCell::default();
}

/// Gives the rest of the worker a turn.
pub async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        RELAY.with_borrow_mut(|r| {
            if r.running {
                r.yielded.push(cx.waker().clone());
                if let Some(w) = r.relay.take() {
                    w.wake();
                }
            } else {
                // No relay on this thread (a test, or before the worker started it).
                cx.waker().wake_by_ref();
            }
        });
        Poll::Pending
    })
    .await
}

/// The relay task of a worker: wakes yielded tasks once everything queued before it has run.
pub async fn relay() {
    RELAY.with_borrow_mut(|r| r.running = true);
    let mut batch = Vec::new();
    loop {
        poll_fn(|cx| {
            RELAY.with_borrow_mut(|r| {
                if r.yielded.is_empty() {
                    r.relay = Some(cx.waker().clone());
                    Poll::Pending
                } else {
                    std::mem::swap(&mut r.yielded, &mut batch);
                    Poll::Ready(())
                }
            })
        })
        .await;
        for w in batch.drain(..) {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    #[test]
    fn a_yielding_task_lets_the_others_run_first() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().build().expect("runtime");
        rt.block_on(async {
            monoio::spawn(relay());
            let log = Rc::new(RefCell::new(Vec::new()));
            let done = Rc::new(Cell::new(false));
            let spinner = {
                let (log, done) = (log.clone(), done.clone());
                monoio::spawn(async move {
                    for _ in 0..3 {
                        log.borrow_mut().push("spin");
                        yield_now().await;
                    }
                    done.set(true);
                })
            };
            let other = {
                let log = log.clone();
                monoio::spawn(async move { log.borrow_mut().push("other") })
            };
            other.await;
            spinner.await;
            assert!(done.get());
            let log = log.borrow();
            // The other task ran before the spinner's second turn, not after all of them.
            let other_at = log.iter().position(|e| *e == "other").expect("other ran");
            assert!(other_at <= 1, "{log:?}");
        });
    }
}
