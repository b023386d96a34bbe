//! Shard-local waiting without per-connection timers: a task waits here for the shard to start
//! draining, or for a coarse deadline, whichever its kind of wait asks. Waiters live in one slab
//! (a waker and a deadline each, ~48 bytes), and the shard's housekeeping task wakes expired ones
//! on each tick. monoio's own timer future is 640 bytes; idle connections use this instead so
//! their tasks stay small. Deadlines fire up to one tick late.
//!
//! Draining has a grace: an idle connection's wait does not end when draining starts but at the
//! grace's end (or its own deadline, if sooner), so a request already on its way is answered
//! rather than lost to the close.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use slab::Slab;

struct Waiter {
    waker: Waker,
    deadline: Option<Instant>,
}

#[derive(Default)]
pub struct Drain {
    started: Cell<bool>,
    /// When idle connections stop being read from; set when draining starts.
    grace_end: Cell<Option<Instant>>,
    waiters: RefCell<Slab<Waiter>>,
}

impl Drain {
    pub fn is_draining(&self) -> bool {
        self.started.get()
    }

    /// When idle connections are closed, once draining.
    pub fn grace_end(&self) -> Option<Instant> {
        self.grace_end.get()
    }

    /// Starts draining; idle waits end at `grace_end` from now on.
    pub fn start(&self, grace_end: Instant) {
        if self.started.replace(true) {
            return;
        }
        self.grace_end.set(Some(grace_end));
        // Every waiter looks again: drain waits end, idle waits take the grace as their deadline.
        for (_, w) in self.waiters.borrow().iter() {
            w.waker.wake_by_ref();
        }
    }

    /// Wakes waiters whose deadline has passed. Called by the shard's housekeeping tick.
    pub fn tick(&self, now: Instant) {
        let waiters = self.waiters.borrow();
        for (_, w) in waiters.iter() {
            if w.deadline.is_some_and(|d| d <= now) {
                w.waker.wake_by_ref();
            }
        }
    }

    /// Resolves once draining has started.
    pub fn wait(&self) -> DrainWait<'_> {
        DrainWait { drain: self, key: None, until: Until::Start }
    }

    /// For an idle connection: resolves once `deadline` has passed or, when draining, the
    /// grace has ended (checked on each tick).
    pub fn wait_idle(&self, deadline: Instant) -> DrainWait<'_> {
        DrainWait { drain: self, key: None, until: Until::Idle(deadline) }
    }
}

#[derive(Clone, Copy)]
enum Until {
    Start,
    Idle(Instant),
}

pub struct DrainWait<'a> {
    drain: &'a Drain,
    key: Option<usize>,
    until: Until,
}

impl Future for DrainWait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = match self.until {
            Until::Start if self.drain.started.get() => return Poll::Ready(()),
            Until::Start => None,
            Until::Idle(d) => {
                let d = self.drain.grace_end.get().map_or(d, |g| g.min(d));
                if d <= Instant::now() {
                    return Poll::Ready(());
                }
                Some(d)
            }
        };
        let mut waiters = self.drain.waiters.borrow_mut();
        match self.key {
            Some(k) => match waiters.get_mut(k) {
                Some(w) => {
                    w.deadline = deadline;
                    if !w.waker.will_wake(cx.waker()) {
                        w.waker = cx.waker().clone();
                    }
                }
                None => return Poll::Ready(()),
            },
            None => {
                let k = waiters.insert(Waiter { waker: cx.waker().clone(), deadline });
                drop(waiters);
                self.key = Some(k);
            }
        }
        Poll::Pending
    }
}

impl Drop for DrainWait<'_> {
    fn drop(&mut self) {
        if let Some(k) = self.key {
            let mut waiters = self.drain.waiters.borrow_mut();
            if waiters.contains(k) {
                waiters.remove(k);
            }
        }
    }
}
