//! After a burst of requests that overflows a shard's buffer pool, the gateway returns free heap
//! pages to the OS once the burst is over, and a steady load that fits the pool never triggers
//! it. (What it gives back is measured by `loadtest/run.sh --idle-conns`.)

mod common;

use std::thread;
use std::time::Duration;

use common::*;

#[test]
fn a_burst_past_the_buffer_pool_is_followed_by_one_heap_trim_and_steady_load_by_none() {
    let up = Upstream::start(|c| {
        while c.read_request().is_some() {
            thread::sleep(Duration::from_millis(150));
            if !c.respond(b"ok") {
                break;
            }
        }
    });
    let gw = Gw::start(&config(&[up.addr], "pooled_buffers = 4", "[admin]\nlisten = \"127.0.0.1:0\"\n"));
    // Steady: one request at a time needs three buffers, which the pool of four holds.
    let mut c = Client::connect(gw.addr);
    for _ in 0..5 {
        assert_eq!(c.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
    }
    thread::sleep(Duration::from_millis(600));
    assert_eq!(gw.metric("ringgate_buffers_released_total"), 0.0);
    assert_eq!(gw.metric("ringgate_heap_trims_total"), 0.0);
    // A burst: twelve at once need 36 buffers.
    let clients: Vec<_> = (0..12)
        .map(|_| {
            let addr = gw.addr;
            thread::spawn(move || get(addr, "/burst").status)
        })
        .collect();
    for t in clients {
        assert_eq!(t.join().unwrap(), 200);
    }
    assert!(gw.metric("ringgate_buffers_released_total") > 0.0);
    assert!(wait_until(Duration::from_secs(3), || gw.metric("ringgate_heap_trims_total") == 1.0), "no trim after the burst");
    // Once: nothing more is released, so nothing more is trimmed.
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(gw.metric("ringgate_heap_trims_total"), 1.0);
}
