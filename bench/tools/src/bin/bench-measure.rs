//! Runs a command and writes its wall time, CPU time (user + sys) and peak
//! RSS, from wait4, as one JSON line to OUT; exits with the command's status.
//!
//! usage: bench-measure OUT -- COMMAND [ARGS...]
//!
//! Why not measure from the Python driver directly: a child's ru_maxrss
//! starts from the memory of the process it was forked from (exec keeps the
//! old address space's high-water mark), so a large driver would inflate
//! every figure. This process is small. TERM and INT are passed on to the
//! command.

use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Instant;

static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(signal: libc::c_int) {
    let pid = CHILD.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, signal) };
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !(args.len() > 3 && args[2] == "--") {
        eprintln!("usage: bench-measure OUT -- COMMAND [ARGS...]");
        std::process::exit(2);
    }
    let out = &args[1];
    let started = Instant::now();
    let child = match Command::new(&args[3]).args(&args[4..]).spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("bench-measure: cannot start {}: {e}", args[3]);
            std::process::exit(127);
        }
    };
    let pid = child.id() as libc::pid_t;
    CHILD.store(pid, Ordering::Relaxed);
    let handler = forward as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: installing a handler that only calls kill.
    unsafe {
        libc::signal(libc::SIGTERM, handler);
        libc::signal(libc::SIGINT, handler);
    }
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid value; wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to our own status and rusage.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            eprintln!("bench-measure: cannot wait for {}: {error}", args[3]);
            std::process::exit(1);
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let cpu = seconds(usage.ru_utime) + seconds(usage.ru_stime);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    let result = format!(
        "{{\"wall\": {wall:.6}, \"cpu\": {cpu:.6}, \"maxrss_kib\": {}, \"exit\": {code}}}\n",
        usage.ru_maxrss
    );
    if let Err(e) = std::fs::write(&out, result) {
        eprintln!("bench-measure: cannot write the result: {e}");
        std::process::exit(if code == 0 { 1 } else { code });
    }
    std::process::exit(code);
}
