//! When the process runs out of file descriptors, accept fails with EMFILE on every call; the
//! accept loop must pause instead of spinning, and serve again once descriptors are free.
//! Its own test binary: it lowers the process-wide descriptor limit.

mod common;

use std::time::Duration;

use common::*;

/// The stat file of the thread named `name`, opened now (reading it later needs no new fd).
fn thread_stat(name: &str) -> Option<std::fs::File> {
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            return std::fs::File::open(task.path().join("stat")).ok();
        }
    }
    None
}

/// utime + stime of a thread, in clock ticks.
fn cpu_ticks(stat: &mut std::fs::File) -> u64 {
    use std::io::{Read, Seek};
    let mut text = String::new();
    stat.seek(std::io::SeekFrom::Start(0)).unwrap();
    stat.read_to_string(&mut text).unwrap();
    // Fields after the ")" closing the command name: utime is the 14th field, stime the 15th.
    let rest = text.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn set_fd_limit(soft: u64) -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        let old = lim.rlim_cur;
        lim.rlim_cur = soft;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        old
    }
}

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count() as u64).unwrap_or(0)
}

#[test]
fn accept_pauses_without_spinning_when_descriptors_run_out() {
    let up = Upstream::ok(b"ok");
    let gw = Gw::start(&config(&[up.addr], "", ""));
    assert_eq!(get(gw.addr, "/").status, 200);

    let mut stat = thread_stat("ringgate-0").expect("shard thread found");
    // Client sockets are created first, so connecting them later needs no descriptor; the
    // gateway can accept only a few before accept fails with EMFILE, the rest wait in the backlog.
    let sockets: Vec<socket2::Socket> =
        (0..40).map(|_| socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap()).collect();
    let old = set_fd_limit(open_fds() + 4);
    let clients: Vec<socket2::Socket> = sockets.into_iter().filter(|s| s.connect(&gw.addr.into()).is_ok()).collect();
    assert!(clients.len() > 10, "only {} clients connected", clients.len());
    std::thread::sleep(Duration::from_millis(200));
    let before = cpu_ticks(&mut stat);
    std::thread::sleep(Duration::from_secs(1));
    let spent = cpu_ticks(&mut stat) - before;
    // Clock ticks are 10 ms: a spinning accept loop would burn ~100 in this second.
    assert!(spent <= 20, "shard used {spent} ticks in 1 s while out of descriptors");

    drop(clients);
    set_fd_limit(old);
    assert!(wait_until(Duration::from_secs(5), || {
        std::panic::catch_unwind(|| get(gw.addr, "/").status == 200).unwrap_or(false)
    }));
}
