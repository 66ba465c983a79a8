//! The V4L2 device as the kernel (or an LD_PRELOAD layer) sees it: every
//! call goes through libc's `open`, `ioctl`, `mmap`, `poll`, `munmap` and
//! `close`, never a raw system call, so the layers that stand in for a
//! camera driver in user space (libcamerify for Raspberry Pi camera
//! modules, PipeWire's pw-v4l2, libv4l's shims) see them. The structures
//! and request codes come from the v4l crate's bindings of `videodev2.h`.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use v4l::v4l2::vidioc;
use v4l::v4l_sys as sys;

use super::{ControlInfo, ControlKind, Dequeued, Driver, Granted, RateRange, SizeRange};

const CAPTURE: u32 = sys::v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_CAPTURE;
const MMAP: u32 = sys::v4l2_memory_V4L2_MEMORY_MMAP;

/// One `ioctl`, retried when a signal interrupts it.
///
/// # Safety
/// `arg` must be the structure `request` expects.
unsafe fn ioctl<T>(fd: i32, request: vidioc::_IOC_TYPE, arg: &mut T) -> io::Result<()> {
    loop {
        // The request type differs between libcs; on Linux it is c_ulong.
        if libc::ioctl(fd, request as libc::c_ulong, arg as *mut T) != -1 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// A zeroed V4L2 structure (they are plain C data: zero is their "unset").
fn zeroed<T>() -> T {
    // SAFETY: only used for the bindgen structures of videodev2.h, for which
    // all-zero bytes are a valid value.
    unsafe { std::mem::zeroed() }
}

/// A buffer the driver fills, mapped into memory.
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: mapped by `map_buffer` with this length, unmapped once.
        unsafe {
            libc::munmap(self.ptr, self.len);
        }
    }
}

/// An open V4L2 device node.
pub struct SysDriver {
    fd: i32,
    buffers: Vec<Mapping>,
    streaming: bool,
}

// SAFETY: the mappings are only read through `&self` while the driver is
// not writing them (between DQBUF and QBUF); the device is used by one
// thread at a time.
unsafe impl Send for SysDriver {}

impl SysDriver {
    /// Opens the node at `path`, non-blocking (waits are done with poll).
    pub(crate) fn open(path: &Path) -> io::Result<SysDriver> {
        let path = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a valid C string; the result is checked.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(SysDriver {
            fd,
            buffers: Vec::new(),
            streaming: false,
        })
    }

    fn ioctl<T>(&self, request: vidioc::_IOC_TYPE, arg: &mut T) -> io::Result<()> {
        // SAFETY: every caller passes the structure its request names.
        unsafe { ioctl(self.fd, request, arg) }
    }

    fn free_buffers(&mut self) {
        if self.streaming {
            let mut kind = CAPTURE;
            let _ = self.ioctl(vidioc::VIDIOC_STREAMOFF, &mut kind);
            self.streaming = false;
        }
        if !self.buffers.is_empty() {
            self.buffers.clear();
            let mut request: sys::v4l2_requestbuffers = zeroed();
            request.type_ = CAPTURE;
            request.memory = MMAP;
            let _ = self.ioctl(vidioc::VIDIOC_REQBUFS, &mut request);
        }
    }
}

impl Drop for SysDriver {
    fn drop(&mut self) {
        self.free_buffers();
        // SAFETY: our own descriptor, closed once.
        unsafe {
            libc::close(self.fd);
        }
    }
}

/// A C string field of a V4L2 structure, as text.
fn text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

impl Driver for SysDriver {
    fn formats(&mut self) -> io::Result<Vec<[u8; 4]>> {
        let mut formats = Vec::new();
        for index in 0.. {
            let mut desc: sys::v4l2_fmtdesc = zeroed();
            desc.index = index;
            desc.type_ = CAPTURE;
            match self.ioctl(vidioc::VIDIOC_ENUM_FMT, &mut desc) {
                Ok(()) => formats.push(desc.pixelformat.to_le_bytes()),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(formats)
    }

    fn sizes(&mut self, fourcc: [u8; 4]) -> io::Result<Vec<SizeRange>> {
        let mut sizes = Vec::new();
        for index in 0.. {
            let mut size: sys::v4l2_frmsizeenum = zeroed();
            size.index = index;
            size.pixel_format = u32::from_le_bytes(fourcc);
            match self.ioctl(vidioc::VIDIOC_ENUM_FRAMESIZES, &mut size) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
                Err(e) => return Err(e),
            }
            // SAFETY: the union member `type_` names.
            unsafe {
                if size.type_ == sys::v4l2_frmsizetypes_V4L2_FRMSIZE_TYPE_DISCRETE {
                    let d = size.__bindgen_anon_1.discrete;
                    sizes.push(SizeRange::Discrete(d.width, d.height));
                } else {
                    let s = size.__bindgen_anon_1.stepwise;
                    sizes.push(SizeRange::Stepwise {
                        min: (s.min_width, s.min_height),
                        max: (s.max_width, s.max_height),
                        step: (s.step_width, s.step_height),
                    });
                    break; // stepwise and continuous come alone
                }
            }
        }
        Ok(sizes)
    }

    fn rates(&mut self, fourcc: [u8; 4], width: u32, height: u32) -> io::Result<Vec<RateRange>> {
        let mut rates = Vec::new();
        for index in 0.. {
            let mut interval: sys::v4l2_frmivalenum = zeroed();
            interval.index = index;
            interval.pixel_format = u32::from_le_bytes(fourcc);
            interval.width = width;
            interval.height = height;
            match self.ioctl(vidioc::VIDIOC_ENUM_FRAMEINTERVALS, &mut interval) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
                Err(e) => return Err(e),
            }
            let fraction = |f: sys::v4l2_fract| (f.numerator, f.denominator);
            // SAFETY: the union member `type_` names.
            unsafe {
                if interval.type_ == sys::v4l2_frmivaltypes_V4L2_FRMIVAL_TYPE_DISCRETE {
                    rates.push(RateRange::Discrete(fraction(
                        interval.__bindgen_anon_1.discrete,
                    )));
                } else {
                    let s = interval.__bindgen_anon_1.stepwise;
                    rates.push(RateRange::Stepwise {
                        shortest: fraction(s.min),
                        longest: fraction(s.max),
                    });
                    break;
                }
            }
        }
        Ok(rates)
    }

    fn set_format(&mut self, fourcc: [u8; 4], width: u32, height: u32) -> io::Result<Granted> {
        self.free_buffers();
        let mut format: sys::v4l2_format = zeroed();
        format.type_ = CAPTURE;
        // `pix` is the member for a capture type (writing a union field
        // is safe).
        format.fmt.pix.width = width;
        format.fmt.pix.height = height;
        format.fmt.pix.pixelformat = u32::from_le_bytes(fourcc);
        format.fmt.pix.field = sys::v4l2_field_V4L2_FIELD_NONE;
        self.ioctl(vidioc::VIDIOC_S_FMT, &mut format)?;
        // SAFETY: as above; the driver filled in what it granted.
        let pix = unsafe { format.fmt.pix };
        Ok(Granted {
            fourcc: pix.pixelformat.to_le_bytes(),
            width: pix.width,
            height: pix.height,
            stride: pix.bytesperline,
        })
    }

    fn set_rate(&mut self, fps: u32) -> io::Result<Option<(u32, u32)>> {
        let mut params: sys::v4l2_streamparm = zeroed();
        params.type_ = CAPTURE;
        // `capture` is the member for a capture type.
        params.parm.capture.timeperframe = sys::v4l2_fract {
            numerator: 1,
            denominator: fps.max(1),
        };
        self.ioctl(vidioc::VIDIOC_S_PARM, &mut params)?;
        // SAFETY: as above.
        let granted = unsafe { params.parm.capture.timeperframe };
        Ok((granted.numerator > 0 && granted.denominator > 0)
            .then_some((granted.numerator, granted.denominator)))
    }

    fn request_buffers(&mut self, count: u32) -> io::Result<u32> {
        let mut request: sys::v4l2_requestbuffers = zeroed();
        request.count = count;
        request.type_ = CAPTURE;
        request.memory = MMAP;
        self.ioctl(vidioc::VIDIOC_REQBUFS, &mut request)?;
        self.buffers.clear();
        for index in 0..request.count {
            let mut buffer: sys::v4l2_buffer = zeroed();
            buffer.index = index;
            buffer.type_ = CAPTURE;
            buffer.memory = MMAP;
            self.ioctl(vidioc::VIDIOC_QUERYBUF, &mut buffer)?;
            let len = buffer.length as usize;
            // SAFETY: the offset the driver gave for this buffer; the result
            // is checked, and unmapped once by `Mapping`'s drop.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    self.fd,
                    buffer.m.offset as libc::off_t,
                )
            };
            if ptr == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            self.buffers.push(Mapping { ptr, len });
        }
        Ok(request.count)
    }

    fn queue(&mut self, index: u32) -> io::Result<()> {
        let mut buffer: sys::v4l2_buffer = zeroed();
        buffer.index = index;
        buffer.type_ = CAPTURE;
        buffer.memory = MMAP;
        self.ioctl(vidioc::VIDIOC_QBUF, &mut buffer)
    }

    fn stream_on(&mut self) -> io::Result<()> {
        let mut kind = CAPTURE;
        self.ioctl(vidioc::VIDIOC_STREAMON, &mut kind)?;
        self.streaming = true;
        Ok(())
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<bool> {
        let mut fds = libc::pollfd {
            fd: self.fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        match unsafe { libc::poll(&mut fds, 1, ms) } {
            -1 => {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    Ok(false)
                } else {
                    Err(error)
                }
            }
            0 => Ok(false),
            _ if fds.revents & (libc::POLLERR | libc::POLLNVAL) != 0 => {
                Err(io::Error::from_raw_os_error(libc::ENODEV))
            }
            _ => Ok(true),
        }
    }

    fn dequeue(&mut self) -> io::Result<Option<Dequeued>> {
        let mut buffer: sys::v4l2_buffer = zeroed();
        buffer.type_ = CAPTURE;
        buffer.memory = MMAP;
        match self.ioctl(vidioc::VIDIOC_DQBUF, &mut buffer) {
            Ok(()) => {}
            // Woken, but no buffer after all: not ready yet.
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return Ok(None),
            Err(e) => return Err(e),
        }
        let monotonic = buffer.flags & sys::V4L2_BUF_FLAG_TIMESTAMP_MASK
            == sys::V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC;
        let stamp = buffer.timestamp;
        let timestamp = (monotonic && (stamp.tv_sec > 0 || stamp.tv_usec > 0)).then(|| {
            Duration::new(stamp.tv_sec.max(0) as u64, 0)
                + Duration::from_micros(stamp.tv_usec.max(0) as u64)
        });
        Ok(Some(Dequeued {
            index: buffer.index,
            bytesused: buffer.bytesused as usize,
            damaged: buffer.flags & sys::V4L2_BUF_FLAG_ERROR != 0,
            timestamp,
        }))
    }

    fn data(&self, index: u32) -> &[u8] {
        match self.buffers.get(index as usize) {
            // SAFETY: a live mapping of `len` bytes, read while the driver
            // does not own the buffer (between DQBUF and QBUF).
            Some(m) => unsafe { std::slice::from_raw_parts(m.ptr as *const u8, m.len) },
            None => &[],
        }
    }

    fn controls(&mut self) -> io::Result<Vec<ControlInfo>> {
        let mut controls = Vec::new();
        let mut id = sys::V4L2_CTRL_FLAG_NEXT_CTRL;
        loop {
            let mut query: sys::v4l2_queryctrl = zeroed();
            query.id = id;
            match self.ioctl(vidioc::VIDIOC_QUERYCTRL, &mut query) {
                Ok(()) => {}
                // The end of the list, or no controls at all.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOTTY)) => break,
                Err(e) => return Err(e),
            }
            id = query.id | sys::V4L2_CTRL_FLAG_NEXT_CTRL;
            if query.flags & sys::V4L2_CTRL_FLAG_DISABLED != 0 {
                continue;
            }
            let kind = match query.type_ {
                sys::v4l2_ctrl_type_V4L2_CTRL_TYPE_INTEGER => ControlKind::Integer,
                sys::v4l2_ctrl_type_V4L2_CTRL_TYPE_BOOLEAN => ControlKind::Boolean,
                sys::v4l2_ctrl_type_V4L2_CTRL_TYPE_MENU => ControlKind::Menu(self.menu(&query)?),
                sys::v4l2_ctrl_type_V4L2_CTRL_TYPE_INTEGER_MENU => {
                    ControlKind::Menu(self.menu(&query)?)
                }
                _ => continue, // classes, buttons, strings: nothing to set
            };
            let mut value: sys::v4l2_control = zeroed();
            value.id = query.id;
            let current = self
                .ioctl(vidioc::VIDIOC_G_CTRL, &mut value)
                .ok()
                .map(|()| i64::from(value.value));
            controls.push(ControlInfo {
                id: query.id,
                name: text(&query.name),
                kind,
                min: i64::from(query.minimum),
                max: i64::from(query.maximum),
                step: i64::from(query.step),
                default: i64::from(query.default_value),
                current,
            });
        }
        Ok(controls)
    }

    fn set_control(&mut self, id: u32, value: i64) -> io::Result<()> {
        let mut control: sys::v4l2_control = zeroed();
        control.id = id;
        control.value =
            i32::try_from(value).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        self.ioctl(vidioc::VIDIOC_S_CTRL, &mut control)
    }
}

impl SysDriver {
    /// The items of a menu control: (index, name).
    fn menu(&self, query: &sys::v4l2_queryctrl) -> io::Result<Vec<(i64, String)>> {
        let mut items = Vec::new();
        for index in query.minimum.max(0)..=query.maximum.max(0) {
            let mut item: sys::v4l2_querymenu = zeroed();
            item.id = query.id;
            item.index = index as u32;
            if self.ioctl(vidioc::VIDIOC_QUERYMENU, &mut item).is_err() {
                continue; // indexes a menu skips
            }
            // SAFETY: a plain menu has names; an integer menu has values.
            let name = unsafe {
                if query.type_ == sys::v4l2_ctrl_type_V4L2_CTRL_TYPE_INTEGER_MENU {
                    let value = item.__bindgen_anon_1.value;
                    value.to_string()
                } else {
                    text(&item.__bindgen_anon_1.name)
                }
            };
            items.push((i64::from(index), name));
        }
        Ok(items)
    }
}
