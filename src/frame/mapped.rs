//! Frames read where they are: a regular file mapped into memory, its frames
//! handed to the encoders as [`View`]s instead of being copied into ring
//! buffers. (A 1080p RGB frame is 6 MB: copying it from the page cache took
//! the capture thread a sixth of a core at full speed, on a machine whose
//! two cores the encoders need.)
//!
//! A mapped file that shrinks underneath (someone truncates the input while
//! it is read) makes a read of the lost pages raise `SIGBUS`, which would
//! kill the recorder. A `SIGBUS` handler catches a fault inside a mapping
//! made here, puts zero pages in place of the rest of that mapping and
//! notes the lowest address that faulted. A frame is checked once encoded
//! ([`View::damaged`]): if the file is now shorter than the frame's end, or
//! a fault hit at or before it, its bytes may be zeros standing in for lost
//! data and the encoder drops it. After a fault the source stops mapping.
//! A fault anywhere else goes to the handler that was there before (Rust's
//! own stack-overflow report) or to the default action, as without us; a
//! `SIGBUS` sent by another process (`kill -BUS`) ends the recorder as it
//! ends any program.
//!
//! A frame's bytes are read when it is encoded, not when it is captured: a
//! file written over in place while it is recorded gives what it holds then.
//!
//! Once a view is given back its pages are unmapped (`MADV_DONTNEED`): the
//! page cache keeps them, and the recorder's memory stays the ring's size
//! however long the file. The kernel maps pages around a fault too (a
//! neighbour's, already given back): those are swept up behind the views
//! still in use.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// How many mappings may be live at once (one raw source at a time needs
/// one; a reload opens the next before the last is gone).
const SLOTS: usize = 8;

/// A live mapping, as the `SIGBUS` handler sees it: `start == 0` is free.
struct Slot {
    start: AtomicUsize,
    /// One past the last mapped byte (a whole number of pages).
    end: AtomicUsize,
    /// `SIGBUS` faults caught inside this mapping since it was made.
    faults: AtomicU64,
    /// The lowest page address that faulted (`usize::MAX`: none).
    first_fault: AtomicUsize,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            start: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
            faults: AtomicU64::new(0),
            first_fault: AtomicUsize::new(usize::MAX),
        }
    }
}

static SLOTS_IN_USE: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];

/// The `SIGBUS` action in place before ours, to pass other faults on to.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();
/// The page size, read once before the handler can run.
static PAGE: AtomicUsize = AtomicUsize::new(4096);

/// A read-only mapping of a whole regular file.
pub struct MappedFile {
    ptr: *mut libc::c_void,
    /// The file's length when mapped.
    len: usize,
    /// The mapping's length: `len` rounded up to whole pages.
    mapped: usize,
    slot: &'static Slot,
    /// The file, to ask its length again once a frame is read.
    file: File,
    /// Views not yet given back.
    live: AtomicUsize,
    /// Everything below this offset has been unmapped since (see `sweep`).
    swept: AtomicUsize,
}

/// How far apart sweeps behind the views in use are, in bytes (and the
/// largest stretch the kernel maps around one fault, a huge page, covered).
const SWEEP: usize = 2 << 20;

/// The stretch the kernel maps around a page fault (Linux's
/// `fault_around_bytes`, 64 KiB), aligned to its size.
const FAULT_AROUND: usize = 64 << 10;

/// `x` rounded down to a multiple of `align` (a power of two).
const fn align_down(x: usize, align: usize) -> usize {
    x & !(align - 1)
}

/// `x` rounded up to a multiple of `align` (a power of two), saturating.
const fn align_up(x: usize, align: usize) -> usize {
    align_down(x.saturating_add(align - 1), align)
}

// SAFETY: the mapping is read-only and lives until the last `Arc` is gone;
// the pointer is only read through slices of it.
unsafe impl Send for MappedFile {}
// SAFETY: as above: shared reads only.
unsafe impl Sync for MappedFile {}

impl MappedFile {
    /// Maps `file` (a regular file) whole, or `None` when it cannot be (it
    /// is empty, the file system cannot map, or too many mappings are live):
    /// the caller reads it instead.
    pub fn map(file: &File) -> Option<Arc<MappedFile>> {
        let len = usize::try_from(file.metadata().ok()?.len()).ok()?;
        if len == 0 || !install_handler() {
            return None;
        }
        let file = file.try_clone().ok()?;
        let page = PAGE.load(Ordering::Relaxed);
        // A file's length is at most i64::MAX: no overflow here.
        let mapped = align_up(len, page);
        let slot = SLOTS_IN_USE.iter().find(|s| {
            s.start
                .compare_exchange(0, usize::MAX, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })?;
        // SAFETY: a fresh read-only shared mapping of a file we hold open;
        // nothing else is placed at its address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            slot.start.store(0, Ordering::Release);
            return None;
        }
        // Read ahead generously: frames are read front to back.
        // SAFETY: advice on our own mapping.
        unsafe { libc::madvise(ptr, mapped, libc::MADV_SEQUENTIAL) };
        slot.faults.store(0, Ordering::Relaxed);
        slot.first_fault.store(usize::MAX, Ordering::Relaxed);
        slot.end.store(ptr as usize + mapped, Ordering::Release);
        slot.start.store(ptr as usize, Ordering::Release);
        Some(Arc::new(MappedFile {
            ptr,
            len,
            mapped,
            slot,
            file,
            live: AtomicUsize::new(0),
            swept: AtomicUsize::new(0),
        }))
    }

    /// Faults caught in this mapping: not zero once the file shrank.
    pub fn faults(&self) -> u64 {
        self.slot.faults.load(Ordering::SeqCst)
    }

    /// A view of `len` bytes at `offset`: `None` past the file's mapped
    /// length, or once a fault showed the file shrank (read it instead).
    /// Made by one thread, in order of `offset`.
    pub fn view(self: &Arc<Self>, offset: usize, len: usize) -> Option<View> {
        if offset.checked_add(len)? > self.len || self.faults() != 0 {
            return None;
        }
        let live = self.live.fetch_add(1, Ordering::Relaxed) + 1;
        self.sweep(offset, live.saturating_add(1).saturating_mul(len));
        Some(View {
            file: Arc::clone(self),
            offset,
            len,
        })
    }

    /// Unmaps what lies more than `lag` bytes behind `offset` (whole
    /// [`SWEEP`] stretches), once a stretch has gathered: pages the kernel
    /// mapped around a fault, beyond the frame that faulted, are not left
    /// behind. The views in use lie within `lag` (bar one stuck far behind,
    /// whose pages are simply mapped again if it reads them).
    fn sweep(&self, offset: usize, lag: usize) {
        let below = align_down(offset.saturating_sub(lag), SWEEP);
        let swept = self.swept.load(Ordering::Relaxed);
        if below >= swept + SWEEP {
            self.unmap(swept, below);
            self.swept.store(below, Ordering::Relaxed);
        }
    }

    /// Whether `offset..offset + len` may not hold the file's bytes: a
    /// fault hit at or before its end, or the file is now shorter.
    fn damaged(&self, offset: usize, len: usize) -> bool {
        let end = offset + len;
        let first_fault = self.slot.first_fault.load(Ordering::SeqCst);
        if first_fault < self.ptr as usize + end {
            return true;
        }
        // A cut inside a page raises no fault: the rest of the page reads
        // as zeros. One fstat a frame tells.
        rustix::fs::fstat(&self.file).map_or(true, |st| (st.st_size as u64) < end as u64)
    }

    fn bytes(&self, offset: usize, len: usize) -> &[u8] {
        // SAFETY: `offset + len <= self.len` (checked when the view was
        // made) and the mapping lives as long as `self`. Pages the file
        // lost are replaced by zero pages by the SIGBUS handler, so the
        // read never kills the process; `View::damaged` tells such a read.
        unsafe { std::slice::from_raw_parts((self.ptr as *const u8).add(offset), len) }
    }

    /// Unmaps the pages of `start..end` (rounded out to whole pages) from
    /// this process. The page cache keeps them; a later read maps them
    /// again (from the file, so unmapping a neighbour's page is harmless).
    fn unmap(&self, start: usize, end: usize) {
        let page = PAGE.load(Ordering::Relaxed);
        let start = align_down(start, page);
        let end = align_up(end, page).min(self.mapped);
        if end > start {
            // SAFETY: advice on a range inside our own read-only mapping.
            unsafe {
                libc::madvise(
                    (self.ptr as *mut u8).add(start).cast(),
                    end - start,
                    libc::MADV_DONTNEED,
                )
            };
        }
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        // The handler stops knowing the range before it is unmapped.
        self.slot.start.store(usize::MAX, Ordering::Release);
        // SAFETY: our own mapping, with no view left (each holds an Arc).
        unsafe { libc::munmap(self.ptr, self.mapped) };
        self.slot.end.store(0, Ordering::Release);
        self.slot.start.store(0, Ordering::Release);
    }
}

/// One frame's bytes inside a [`MappedFile`].
pub struct View {
    file: Arc<MappedFile>,
    offset: usize,
    len: usize,
}

impl View {
    pub fn bytes(&self) -> &[u8] {
        self.file.bytes(self.offset, self.len)
    }

    /// Whether the bytes read may not be the file's: it is shorter than the
    /// frame now, or a read at or before the frame's end found its page
    /// gone (they may be zeros standing in for lost data). Asked once the
    /// frame is read; one `fstat`.
    pub fn damaged(&self) -> bool {
        self.file.damaged(self.offset, self.len)
    }
}

impl Clone for View {
    fn clone(&self) -> View {
        self.file.live.fetch_add(1, Ordering::Relaxed);
        View {
            file: Arc::clone(&self.file),
            offset: self.offset,
            len: self.len,
        }
    }
}

impl Drop for View {
    fn drop(&mut self) {
        // Out to the windows the kernel maps around a fault, so what this
        // view's reads mapped of its neighbours goes too, however late it
        // is given back (a neighbour still reading maps its pages again).
        self.file.unmap(
            align_down(self.offset, FAULT_AROUND),
            align_up(self.offset + self.len, FAULT_AROUND),
        );
        self.file.live.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View")
            .field("offset", &self.offset)
            .field("len", &self.len)
            .finish()
    }
}

/// Installs the `SIGBUS` handler once; false if it could not be. The
/// recorder installs it at start, whatever its source, so a `SIGBUS` sent
/// by another process is met the same way by every run.
pub fn install_handler() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if page > 0 {
            PAGE.store(page as usize, Ordering::Relaxed);
        }
        // SAFETY: reading the current action into a zeroed struct, then
        // installing ours; the previous one is stored before ours can run.
        unsafe {
            let mut previous: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut previous) != 0 {
                return false;
            }
            let _ = PREVIOUS.set(previous);
            let mut ours: libc::sigaction = std::mem::zeroed();
            ours.sa_sigaction = on_sigbus as *const () as usize;
            ours.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
            libc::sigemptyset(&mut ours.sa_mask);
            libc::sigaction(libc::SIGBUS, &ours, std::ptr::null_mut()) == 0
        }
    })
}

/// The `SIGBUS` handler: see the module docs. Only async-signal-safe work:
/// atomics and `mmap`/`sigaction`/`raise` system calls, errno kept.
extern "C" fn on_sigbus(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: errno is this thread's; kept for the code interrupted.
    let errno = unsafe { *libc::__errno_location() };
    handle_sigbus(signal, info, context);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

fn handle_sigbus(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo with SA_SIGINFO.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    if code <= 0 {
        // Sent by a process (kill, sigqueue), not a fault: its address
        // field means nothing. The default action, as for any program.
        restore_default();
        // SAFETY: raise is async-signal-safe; SA_NODEFER lets the raised
        // signal through at once.
        unsafe { libc::raise(libc::SIGBUS) };
        return;
    }
    let page = PAGE.load(Ordering::Relaxed);
    for slot in &SLOTS_IN_USE {
        let start = slot.start.load(Ordering::Acquire);
        let end = slot.end.load(Ordering::Acquire);
        if start == 0 || start == usize::MAX || !(start..end).contains(&addr) {
            continue;
        }
        let from = align_down(addr, page);
        // Noted before the pages change, so a reader that sees zeros also
        // sees the fault.
        slot.first_fault.fetch_min(from, Ordering::SeqCst);
        slot.faults.fetch_add(1, Ordering::SeqCst);
        // SAFETY: replaces the rest of our own mapping with zero pages of
        // the same protection; nothing else lives in that range.
        let replaced = unsafe {
            libc::mmap(
                from as *mut libc::c_void,
                end - from,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if replaced != libc::MAP_FAILED {
            return;
        }
        break;
    }
    // Not ours: what would have happened without us.
    let handler = PREVIOUS.get().map(|p| (p.sa_sigaction, p.sa_flags));
    match handler {
        Some((action, flags))
            if action != libc::SIG_DFL
                && action != libc::SIG_IGN
                && flags & libc::SA_SIGINFO != 0 =>
        {
            // SAFETY: the previous handler was installed with SA_SIGINFO,
            // so it has this signature.
            let previous: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                unsafe { std::mem::transmute(action) };
            previous(signal, info, context);
        }
        Some((action, _)) if action != libc::SIG_DFL && action != libc::SIG_IGN => {
            // SAFETY: a plain handler, installed without SA_SIGINFO.
            let previous: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(action) };
            previous(signal);
        }
        // The default action: put back, and the faulting instruction runs
        // again and the process ends as it would have.
        _ => restore_default(),
    }
}

/// Puts `SIGBUS`'s default action back (async-signal-safe).
fn restore_default() {
    // SAFETY: a zeroed sigaction with SIG_DFL; sigaction is
    // async-signal-safe.
    unsafe {
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(libc::SIGBUS, &default, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_of(bytes: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(bytes).unwrap();
        tmp.flush().unwrap();
        let file = File::open(tmp.path()).unwrap();
        (tmp, file)
    }

    #[test]
    fn views_show_the_files_bytes() {
        let bytes: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        let (_tmp, file) = file_of(&bytes);
        let map = MappedFile::map(&file).unwrap();
        assert_eq!(map.len, bytes.len());
        let view = map.view(5000, 7000).unwrap();
        assert_eq!(view.bytes(), &bytes[5000..12000]);
        drop(view);
        // Forgotten pages come back from the file.
        assert_eq!(map.view(4096, 100).unwrap().bytes(), &bytes[4096..4196]);
        assert!(map.view(19_999, 2).is_none(), "a view past the end");
        assert!(!map.view(0, 10).unwrap().damaged());
        // Clones count as views in use until dropped.
        let view = map.view(0, 10).unwrap();
        let twin = view.clone();
        drop(view);
        assert_eq!(map.live.load(Ordering::Relaxed), 1);
        drop(twin);
        assert_eq!(map.live.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_cut_inside_a_page_is_seen_without_a_fault() {
        let bytes = vec![9u8; 3 * 4096];
        let (tmp, file) = file_of(&bytes);
        let map = MappedFile::map(&file).unwrap();
        let whole = map.view(0, bytes.len()).unwrap();
        let head = map.view(0, 4096).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(tmp.path())
            .unwrap()
            .set_len(2 * 4096 + 100)
            .unwrap();
        // The last page is still the file's: it reads as zeros past the
        // cut, and no SIGBUS says so.
        assert_eq!(whole.bytes()[2 * 4096 + 200], 0);
        assert_eq!(map.faults(), 0);
        assert!(whole.damaged(), "the file is shorter than the frame");
        assert!(!head.damaged());
    }

    #[test]
    fn an_empty_file_is_not_mapped() {
        let (_tmp, file) = file_of(b"");
        assert!(MappedFile::map(&file).is_none());
    }

    #[test]
    fn a_file_truncated_under_a_view_reads_zeros_and_says_so() {
        let page = 4096 * 4;
        let bytes = vec![7u8; page * 8];
        let (tmp, file) = file_of(&bytes);
        let map = MappedFile::map(&file).unwrap();
        let early = map.view(0, page).unwrap();
        assert_eq!(early.bytes()[0], 7);
        let late = map.view(page * 6, page).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(tmp.path())
            .unwrap()
            .set_len(page as u64)
            .unwrap();
        // Without the handler this read would end the test process.
        assert!(late.bytes().iter().all(|&b| b == 0));
        assert!(late.damaged());
        assert_eq!(early.bytes()[0], 7, "pages still in the file stay readable");
        assert!(!early.damaged(), "a frame wholly before the cut is whole");
        assert!(map.faults() > 0);
        assert!(map.view(0, 10).is_none(), "no new view of a shrunk file");
    }
}
