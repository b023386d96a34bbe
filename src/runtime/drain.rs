//! Shard-local shutdown signal: tasks wait on it next to their I/O and all wake at once when the
//! shard starts draining. Waiters live in a slab, so waiting never grows memory beyond the number
//! of tasks waiting at the same time.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use slab::Slab;

#[derive(Default)]
pub struct Drain {
    started: Cell<bool>,
    waiters: RefCell<Slab<Waker>>,
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
            w.wake();
        }
    }

    /// Resolves once draining has started.
    pub fn wait(&self) -> DrainWait<'_> {
        DrainWait { drain: self, key: None }
    }
}

pub struct DrainWait<'a> {
    drain: &'a Drain,
    key: Option<usize>,
}

impl Future for DrainWait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.drain.started.get() {
            return Poll::Ready(());
        }
        let mut waiters = self.drain.waiters.borrow_mut();
        match self.key {
            Some(k) => match waiters.get_mut(k) {
                Some(w) if w.will_wake(cx.waker()) => {}
                Some(w) => *w = cx.waker().clone(),
                None => return Poll::Ready(()),
            },
            None => {
                let k = waiters.insert(cx.waker().clone());
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
