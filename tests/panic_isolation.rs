//! A panic while serving one request closes that connection only: the shard keeps serving the
//! connections it already has and accepts new ones. Needs `--features fault-injection`.
#![cfg(feature = "fault-injection")]

mod common;

use common::*;

#[test]
fn a_panicking_request_closes_its_connection_and_the_shard_keeps_serving() {
    let up = Upstream::ok(b"fine");
    let gw = Gw::start(&config(&[up.addr], "", ""));
    let mut bystander = Client::connect(gw.addr);
    assert_eq!(bystander.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);

    let mut victim = Client::connect(gw.addr);
    victim.send(b"GET / HTTP/1.1\r\nHost: h\r\nX-Ringgate-Fault: panic\r\n\r\n");
    assert!(victim.read_response().is_none(), "the panicking request gets no response");
    assert!(victim.is_closed());

    // Same shard (one worker): the open connection and new ones are still served.
    assert_eq!(bystander.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
    assert_eq!(get(gw.addr, "/").status, 200);
    // Only the bystander stays open: the panicked connection's slot was released.
    let released = wait_until(std::time::Duration::from_secs(2), || gw.gateway().open_connections() == 1);
    assert!(released, "{} connections still counted", gw.gateway().open_connections());
}
