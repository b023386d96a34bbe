//! Idle keep-alive connections without a task. A plain HTTP connection that has been quiet for
//! `LINGER` leaves its task: its socket is kept here as a bare descriptor, registered one-shot
//! with the shard's epoll instance, whose readiness one task per shard awaits. When bytes, a
//! close or an error arrive, the connection gets a task again and is served as before. A parked
//! connection costs its slot (~64 bytes) and its kernel socket, instead of a task of several
//! hundred bytes and an io_uring poll; this is how event-loop servers keep idle connections
//! cheap.
//!
//! Parking costs a few system calls (a `dup`, the close of the old descriptor, two `epoll_ctl`)
//! and a new task when the connection wakes, so only connections quiet for longer than `LINGER`
//! are parked: a busy connection never is.
//!
//! A parked connection keeps its deadline (header or idle timeout, whichever it was waiting
//! under) and, when the shard drains, the drain grace; the housekeeping tick closes it then.
//! It stays counted as open (connection limits, per-address caps) through its guard.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use slab::Slab;

use super::ConnGuard;

/// How long a connection waits for its next request in its own task before it is parked. The
/// housekeeping tick ends that wait, so parking happens between `LINGER` and `LINGER` plus one
/// tick (50 ms) after the connection went quiet.
pub(super) const LINGER: Duration = Duration::from_millis(50);

/// Events taken from the epoll instance per call.
const BATCH: usize = 64;

struct Parked {
    fd: OwnedFd,
    /// Tells this parking of the slot from earlier ones (slab keys are reused).
    stamp: u32,
    deadline: Instant,
    guard: ConnGuard,
}

/// A connection coming out of the lot: its socket and the guard that counts it.
pub(super) struct Unparked {
    pub(super) fd: OwnedFd,
    pub(super) guard: ConnGuard,
}

/// One shard's parked connections.
pub(super) struct Lot {
    /// The epoll instance; `None` when it could not be made (connections then stay in their
    /// tasks).
    ep: Option<OwnedFd>,
    slots: RefCell<Slab<Parked>>,
    /// (deadline, key, stamp) of each parking, soonest first. Entries of connections that woke
    /// up stay until they come first or the heap is rebuilt (when it is more than twice the lot).
    deadlines: RefCell<BinaryHeap<Reverse<(Instant, usize, u32)>>>,
    stamp: Cell<u32>,
}

impl Lot {
    pub(super) fn new() -> Lot {
        // SAFETY: epoll_create1 takes no pointers; a non-negative result is a new descriptor we own.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        let ep = (fd >= 0).then(|| {
            // SAFETY: just created, owned by nobody else.
            unsafe { OwnedFd::from_raw_fd(fd) }
        });
        if ep.is_none() {
            tracing::warn!(error = %io::Error::last_os_error(), "no epoll instance; idle connections keep their tasks");
        }
        Lot { ep, slots: RefCell::default(), deadlines: RefCell::default(), stamp: Cell::new(0) }
    }

    pub(super) fn enabled(&self) -> bool {
        self.ep.is_some()
    }

    /// Connections parked now.
    pub(super) fn len(&self) -> usize {
        self.slots.borrow().len()
    }

    /// A second descriptor of the epoll instance, for the task that waits on it.
    pub(super) fn watch_fd(&self) -> io::Result<OwnedFd> {
        match &self.ep {
            Some(ep) => ep.try_clone(),
            None => Err(io::Error::from(io::ErrorKind::Unsupported)),
        }
    }

    /// Parks `fd` until it is readable or `deadline` passes. On failure the connection comes
    /// back, for the caller to close.
    pub(super) fn park(&self, fd: OwnedFd, guard: ConnGuard, deadline: Instant) -> Result<(), Unparked> {
        let Some(ep) = &self.ep else { return Err(Unparked { fd, guard }) };
        let stamp = self.stamp.get().wrapping_add(1);
        self.stamp.set(stamp);
        let raw = fd.as_raw_fd();
        let key = self.slots.borrow_mut().insert(Parked { fd, stamp, deadline, guard });
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32,
            u64: token(key, stamp),
        };
        // SAFETY: both descriptors are open; `ev` lives for the call.
        if unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, raw, &mut ev) } != 0 {
            let p = self.slots.borrow_mut().remove(key);
            return Err(Unparked { fd: p.fd, guard: p.guard });
        }
        let mut heap = self.deadlines.borrow_mut();
        heap.push(Reverse((deadline, key, stamp)));
        if heap.len() > 2 * self.slots.borrow().len() + 64 {
            let slots = self.slots.borrow();
            *heap = slots.iter().map(|(k, p)| Reverse((p.deadline, k, p.stamp))).collect();
        }
        Ok(())
    }

    /// The connections that became readable (or closed) since the last call, out of the lot.
    pub(super) fn take_ready(&self, out: &mut Vec<Unparked>) {
        let Some(ep) = &self.ep else { return };
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; BATCH];
        loop {
            // SAFETY: `events` has room for BATCH entries; timeout 0 never blocks.
            let n = unsafe { libc::epoll_wait(ep.as_raw_fd(), events.as_mut_ptr(), BATCH as i32, 0) };
            if n <= 0 {
                return;
            }
            for ev in &events[..n as usize] {
                let (key, stamp) = untoken(ev.u64);
                if let Some(p) = self.take(key, stamp) {
                    out.push(p);
                }
            }
            if (n as usize) < BATCH {
                return;
            }
        }
    }

    /// The connections whose deadline has passed (or all of them, once `grace_end` has passed
    /// while draining), out of the lot.
    pub(super) fn take_expired(&self, now: Instant, grace_end: Option<Instant>, out: &mut Vec<Unparked>) {
        if grace_end.is_some_and(|g| g <= now) {
            let keys: Vec<(usize, u32)> = self.slots.borrow().iter().map(|(k, p)| (k, p.stamp)).collect();
            out.extend(keys.into_iter().filter_map(|(k, s)| self.take(k, s)));
            self.deadlines.borrow_mut().clear();
            return;
        }
        loop {
            let first = match self.deadlines.borrow().peek() {
                Some(Reverse((d, k, s))) if *d <= now => (*k, *s),
                _ => return,
            };
            self.deadlines.borrow_mut().pop();
            if let Some(p) = self.take(first.0, first.1) {
                out.push(p);
            }
        }
    }

    /// Closes every parked connection (the shard is ending).
    pub(super) fn clear(&self) {
        let mut out = Vec::new();
        self.take_expired(Instant::now(), Some(Instant::now()), &mut out);
    }

    fn take(&self, key: usize, stamp: u32) -> Option<Unparked> {
        let mut slots = self.slots.borrow_mut();
        if slots.get(key).is_none_or(|p| p.stamp != stamp) {
            return None;
        }
        let p = slots.remove(key);
        drop(slots);
        if let Some(ep) = &self.ep {
            deregister(ep.as_raw_fd(), p.fd.as_raw_fd());
        }
        Some(Unparked { fd: p.fd, guard: p.guard })
    }
}

fn deregister(ep: RawFd, fd: RawFd) {
    // SAFETY: both descriptors are open; DEL ignores the event pointer (non-null for old kernels).
    let mut ev = libc::epoll_event { events: 0, u64: 0 };
    unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_DEL, fd, &mut ev) };
}

fn token(key: usize, stamp: u32) -> u64 {
    ((key as u64) << 32) | u64::from(stamp)
}

fn untoken(t: u64) -> (usize, u32) {
    ((t >> 32) as usize, t as u32)
}
