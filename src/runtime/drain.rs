//! Shard-local waiting without per-connection timers: a task waits here for the shard to start
//! draining or for a coarse deadline, whichever comes first. Waiters live in one slab (a waker
//! and a deadline each, ~48 bytes), and the shard's housekeeping task wakes expired ones on each
//! tick. monoio's own timer future is 640 bytes; idle connections use this instead so their
//! tasks stay small. Deadlines fire up to one tick late.

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
    waiters: RefCell<Slab<Waiter>>,
}

impl Drain {
    pub fn is_draining(&self) -> bool {
        self.started.get()
    }

    pub fn start(&self) {
        if self.started.replace(true) {
            return;
        }
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for (_, w) in waiters {
            w.waker.wake();
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
        DrainWait { drain: self, key: None, deadline: None }
    }

    /// Resolves once draining has started or `deadline` has passed (checked on each tick).
    pub fn wait_until(&self, deadline: Instant) -> DrainWait<'_> {
        DrainWait { drain: self, key: None, deadline: Some(deadline) }
    }
}

pub struct DrainWait<'a> {
    drain: &'a Drain,
    key: Option<usize>,
    deadline: Option<Instant>,
}

impl Future for DrainWait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.drain.started.get() || self.deadline.is_some_and(|d| d <= Instant::now()) {
            return Poll::Ready(());
        }
        let mut waiters = self.drain.waiters.borrow_mut();
        match self.key {
            Some(k) => match waiters.get_mut(k) {
                Some(w) if w.waker.will_wake(cx.waker()) => {}
                Some(w) => w.waker = cx.waker().clone(),
                None => return Poll::Ready(()),
            },
            None => {
                let k = waiters.insert(Waiter { waker: cx.waker().clone(), deadline: self.deadline });
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
            if !self.drain.started.get() {
                let mut waiters = self.drain.waiters.borrow_mut();
                if waiters.contains(k) {
                    waiters.remove(k);
                }
            }
        }
    }
}
