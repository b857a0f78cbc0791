//! The simulator's only I/O: a pseudo-terminal per modem in raw mode. The sim keeps the slave
//! open too, so a client closing its side does not hang up the master, and settings survive
//! between client sessions. Clients open the slave path like any serial port.

use super::SimError;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::termios::{self, SetArg};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One pseudo-terminal pair.
#[derive(Debug)]
pub struct Pty {
    master: File,
    _slave: OwnedFd,
    path: PathBuf,
}

fn poll_ms(d: Duration) -> PollTimeout {
    let ms = d.as_millis().min(60_000) as u16;
    PollTimeout::from(ms)
}

impl Pty {
    /// Open a new pty pair, raw mode (no echo, no CR/LF translation, 8 bit), master
    /// non-blocking.
    pub fn open() -> Result<Pty, SimError> {
        let pair = nix::pty::openpty(None, None).map_err(SimError::Pty)?;
        let mut t = termios::tcgetattr(&pair.slave).map_err(SimError::Pty)?;
        termios::cfmakeraw(&mut t);
        let _ = termios::cfsetspeed(&mut t, termios::BaudRate::B115200);
        termios::tcsetattr(&pair.slave, SetArg::TCSANOW, &t).map_err(SimError::Pty)?;
        let path = nix::unistd::ttyname(&pair.slave).map_err(SimError::Pty)?;
        let raw = pair.master.as_raw_fd();
        let flags = fcntl(raw, FcntlArg::F_GETFL).map_err(SimError::Pty)?;
        fcntl(
            raw,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        )
        .map_err(SimError::Pty)?;
        Ok(Pty {
            master: File::from(pair.master),
            _slave: pair.slave,
            path,
        })
    }

    /// The slave device path a client opens (`/dev/pts/N`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Wait up to `timeout` for bytes from the client; `Ok(0)` when none came.
    pub fn read_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        let mut fds = [PollFd::new(self.master.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, poll_ms(timeout)) {
            Ok(0) => return Ok(0),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => return Ok(0),
            Err(e) => return Err(io::Error::from(e)),
        }
        match self.master.read(buf) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Write `data`, waiting while the client's input queue is full, for at most `timeout`
    /// overall. Returns how many bytes went out (fewer on timeout: a modem without flow
    /// control loses what the host does not read).
    pub fn write_timeout(&mut self, data: &[u8], timeout: Duration) -> io::Result<usize> {
        let deadline = Instant::now() + timeout;
        let mut done = 0usize;
        while done < data.len() {
            let rest = data.get(done..).unwrap_or_default();
            match self.master.write(rest) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    let mut fds = [PollFd::new(self.master.as_fd(), PollFlags::POLLOUT)];
                    let wait = (deadline - now).min(Duration::from_millis(100));
                    match poll(&mut fds, poll_ms(wait)) {
                        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                        Err(e) => return Err(io::Error::from(e)),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_round_trip() {
        let mut p = Pty::open().unwrap();
        assert!(p.path().starts_with("/dev/pts"));
        let mut client = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(p.path())
            .unwrap();
        client.write_all(b"AT\r\n").unwrap();
        let mut buf = [0u8; 16];
        let mut got = Vec::new();
        while got.len() < 4 {
            let n = p.read_timeout(&mut buf, Duration::from_secs(2)).unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"AT\r\n", "no CR/LF translation on the way in");
        assert_eq!(
            p.write_timeout(b"OK\r\n", Duration::from_secs(1)).unwrap(),
            4
        );
        let mut out = [0u8; 4];
        client.read_exact(&mut out).unwrap();
        assert_eq!(&out, b"OK\r\n", "no echo, no translation on the way out");
        drop(client);
        // The master survives the client closing.
        assert_eq!(
            p.read_timeout(&mut buf, Duration::from_millis(20)).unwrap(),
            0
        );
    }
}
