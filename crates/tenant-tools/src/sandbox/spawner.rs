//! The thread every sandbox child is cloned from.
//!
//! The kernel delivers a child's parent-death signal when the *thread*
//! that cloned it exits, not when its process does. Cloning from whichever
//! thread asks (a short-lived blocking task, a pool's refill thread) would
//! kill sandboxes when that thread ends, or — worse, had the signal been
//! set earlier — leave them behind when the supervisor dies. One dedicated
//! thread, alive as long as the process, clones them all; callers hand it
//! their prepared plan and wait for the pid.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::mpsc::{channel, sync_channel, Sender, SyncSender};
use std::sync::{Mutex, OnceLock};

use super::sys::{self, ChildPlan};

type Reply = SyncSender<(Box<ChildPlan>, io::Result<(i32, OwnedFd)>)>;
type Request = (Box<ChildPlan>, Reply);

fn spawner() -> io::Result<&'static Mutex<Sender<Request>>> {
    static SPAWNER: OnceLock<Mutex<Sender<Request>>> = OnceLock::new();
    if let Some(s) = SPAWNER.get() {
        return Ok(s);
    }
    let (tx, rx) = channel::<Request>();
    std::thread::Builder::new()
        .name("tenant-tools-spawner".into())
        .spawn(move || {
            while let Ok((mut plan, reply)) = rx.recv() {
                let result = sys::spawn_child(&mut plan);
                let _ = reply.send((plan, result));
            }
        })?;
    Ok(SPAWNER.get_or_init(|| Mutex::new(tx)))
}

/// Clones a child running `plan` from the spawner thread. Returns the plan
/// (its memory must outlive nothing: the child has its own copy) with the
/// child's pid and pidfd.
pub(crate) fn clone_child(plan: Box<ChildPlan>) -> io::Result<(i32, OwnedFd)> {
    let (reply_tx, reply_rx) = sync_channel(1);
    {
        let tx = spawner()?.lock().unwrap_or_else(|e| e.into_inner());
        tx.send((plan, reply_tx))
            .map_err(|_| io::Error::other("the sandbox spawner thread is gone"))?;
    }
    let (_plan, result) = reply_rx
        .recv()
        .map_err(|_| io::Error::other("the sandbox spawner thread is gone"))?;
    result
}
