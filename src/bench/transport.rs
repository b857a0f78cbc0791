//! The byte pipe to one modem: [`Transport`], the real serial port behind it, and port listing.
//!
//! This is the only file that imports `serialport`. Everything above it (the AT parser, the
//! modem client, the workflows) sees bytes, timeouts and `io::Error`s.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::Duration;

/// A byte pipe to one modem. Implemented by the real serial port (and by scripted pipes in
/// unit tests).
///
/// `read` blocks at most the timeout set with `set_timeout`; "nothing arrived" is an
/// `io::ErrorKind::TimedOut` (or `WouldBlock`) error, `Ok(0)` means the device went away.
pub trait Transport: Send {
    /// Read what is available (at least one byte, or time out).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Write all bytes (and push them to the device).
    fn write_all(&mut self, data: &[u8]) -> io::Result<()>;
    /// How long a `read` may block.
    fn set_timeout(&mut self, timeout: Duration) -> io::Result<()>;
    /// Drop bytes received but not read yet (boot banners, stale replies). Default: nothing.
    fn discard_input(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (**self).read(buf)
    }
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        (**self).write_all(data)
    }
    fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        (**self).set_timeout(timeout)
    }
    fn discard_input(&mut self) -> io::Result<()> {
        (**self).discard_input()
    }
}

/// How to open a serial port. Always 115200 8N1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SerialSettings {
    /// RTS/CTS hardware flow control (default on, as Nordic's tools do; `--no-flow-control`).
    pub flow_control: bool,
}

impl Default for SerialSettings {
    fn default() -> Self {
        SerialSettings { flow_control: true }
    }
}

/// Baud rate of the nRF91 DK / Thingy:91 AT UART.
pub const BAUD: u32 = 115_200;

/// Why a port could not be opened. `detail` is the driver's words (with who holds the port,
/// where Linux tells), said in the middle of the sentence before the advice of its `kind`.
#[derive(Debug, thiserror::Error)]
#[error("cannot open serial port {port}: {detail} ({})", kind.advice())]
pub struct OpenError {
    /// The port path as given.
    pub port: String,
    /// What went wrong.
    pub kind: OpenErrorKind,
    /// The underlying message.
    pub detail: String,
}

/// Classes of open failures, each with its own advice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenErrorKind {
    /// No such device.
    NotFound,
    /// Permission denied.
    Permission,
    /// Another program holds the port.
    Busy,
    /// Anything else.
    Other,
}

impl OpenErrorKind {
    /// What the operator should do about this class of failure.
    pub fn advice(self) -> &'static str {
        match self {
            OpenErrorKind::NotFound => {
                "the port does not exist: check the cable and `nrfca bench ports`"
            }
            OpenErrorKind::Permission => {
                "permission denied: add your user to the `dialout` (or `uucp`) group and log in again"
            }
            OpenErrorKind::Busy => {
                "the port is in use by another program (a terminal, nRF Connect, another nrfca): close it"
            }
            OpenErrorKind::Other => "check the cable and that this is the modem's AT port",
        }
    }
}

/// A real serial port (or pty) opened 115200 8N1.
pub struct SerialTransport {
    port: serialport::TTYPort,
}

impl fmt::Debug for SerialTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SerialTransport").finish_non_exhaustive()
    }
}

fn classify(e: &serialport::Error) -> OpenErrorKind {
    match e.kind() {
        // serialport reports EBUSY from TIOCEXCL and a held flock as NoDevice; `open` has
        // checked the path exists, so those are a port in use.
        serialport::ErrorKind::NoDevice => {
            let d = e.to_string().to_ascii_lowercase();
            if d.contains("busy") || d.contains("lock") {
                OpenErrorKind::Busy
            } else {
                OpenErrorKind::NotFound
            }
        }
        serialport::ErrorKind::Io(io::ErrorKind::NotFound) => OpenErrorKind::NotFound,
        serialport::ErrorKind::Io(io::ErrorKind::PermissionDenied) => OpenErrorKind::Permission,
        _ => {
            let d = e.to_string().to_ascii_lowercase();
            if d.contains("busy") || d.contains("resource temporarily") || d.contains("would block")
            {
                OpenErrorKind::Busy
            } else if d.contains("permission") {
                OpenErrorKind::Permission
            } else if d.contains("no such") || d.contains("not found") {
                OpenErrorKind::NotFound
            } else {
                OpenErrorKind::Other
            }
        }
    }
}

/// The processes that hold `path` open, as `name (pid N)`, where Linux tells (`/proc/*/fd`;
/// without privileges only our own user's processes are visible); this process says so.
pub fn holders(path: &Path) -> Vec<String> {
    let Ok(target) = std::fs::canonicalize(path) else {
        return Vec::new();
    };
    let me = std::process::id();
    let mut found = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let holds = fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == target));
        if holds {
            let name = std::fs::read_to_string(p.path().join("comm"))
                .map(|c| c.trim().to_string())
                .unwrap_or_else(|_| "?".into());
            if pid == me {
                found.push(format!("{name} (pid {pid}, this process)"));
            } else {
                found.push(format!("{name} (pid {pid})"));
            }
        }
    }
    found
}

/// Open `path` at 115200 8N1 with exclusive access, RTS/CTS per `settings`.
///
/// A pseudo-terminal (the simulator) accepts and ignores the flow-control bits; a driver that
/// refuses RTS/CTS is retried without it only if the error is about the setting, never
/// silently for real "busy"/"missing" errors.
pub fn open(path: &str, settings: &SerialSettings) -> Result<SerialTransport, OpenError> {
    let err = |e: serialport::Error| OpenError {
        port: path.to_string(),
        kind: classify(&e),
        detail: e.to_string(),
    };
    if !Path::new(path).exists() {
        return Err(OpenError {
            port: path.to_string(),
            kind: OpenErrorKind::NotFound,
            detail: "no such file".into(),
        });
    }
    let builder = |flow: bool| {
        serialport::new(path, BAUD)
            .data_bits(serialport::DataBits::Eight)
            .parity(serialport::Parity::None)
            .stop_bits(serialport::StopBits::One)
            .flow_control(if flow {
                serialport::FlowControl::Hardware
            } else {
                serialport::FlowControl::None
            })
            .timeout(Duration::from_millis(200))
    };
    let err = |e: serialport::Error| {
        let mut o = err(e);
        if o.kind == OpenErrorKind::Busy {
            let held = holders(Path::new(path));
            if !held.is_empty() {
                o.detail = format!("{}; held by {}", o.detail, held.join(", "));
            }
        }
        o
    };
    let port = match serialport::TTYPort::open(&builder(settings.flow_control)) {
        Ok(p) => p,
        Err(e)
            if settings.flow_control
                && matches!(e.kind(), serialport::ErrorKind::InvalidInput)
                && e.to_string().to_ascii_lowercase().contains("flow") =>
        {
            serialport::TTYPort::open(&builder(false)).map_err(err)?
        }
        Err(e) => return Err(err(e)),
    };
    Ok(SerialTransport { port })
}

impl Transport for SerialTransport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Read::read(&mut self.port, buf)
    }
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        Write::write_all(&mut self.port, data)?;
        // tcdrain: on a pty this returns at once; on a UART it waits until sent.
        match Write::flush(&mut self.port) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Ok(()),
            Err(e) => Err(e),
        }
    }
    fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        serialport::SerialPort::set_timeout(&mut self.port, timeout).map_err(io::Error::from)
    }
    fn discard_input(&mut self) -> io::Result<()> {
        serialport::SerialPort::clear(&self.port, serialport::ClearBuffer::Input)
            .map_err(io::Error::from)
    }
}

/// What kind of port a listing entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PortKind {
    /// USB (CDC ACM, J-Link VCOM, USB-serial).
    Usb,
    /// PCI / on-board UART.
    Pci,
    /// Bluetooth RFCOMM.
    Bluetooth,
    /// Could not tell.
    Unknown,
}

/// One serial port found on this machine.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PortInfo {
    /// Device path (`/dev/ttyACM0`, `COM3`).
    pub name: String,
    /// Bus kind.
    pub kind: PortKind,
    /// USB vendor id.
    pub vid: Option<u16>,
    /// USB product id.
    pub pid: Option<u16>,
    /// USB manufacturer string.
    pub manufacturer: Option<String>,
    /// USB product string.
    pub product: Option<String>,
    /// USB serial number.
    pub serial: Option<String>,
    /// A Nordic (VID 0x1915) or SEGGER J-Link (VID 0x1366) device: likely an nRF91 kit.
    pub nordic: bool,
    /// What the kit probably is, from the serial-number prefix Nordic's tools use.
    pub board: Option<&'static str>,
}

/// Nordic Semiconductor USB vendor id.
pub const VID_NORDIC: u16 = 0x1915;
/// SEGGER (J-Link OB on Nordic DKs) USB vendor id.
pub const VID_SEGGER: u16 = 0x1366;

/// Guess the board from a USB serial number (prefixes used by nrfcredstore).
pub fn board_from_serial(serial: &str) -> Option<&'static str> {
    let s = serial.trim_start_matches('0');
    let full = serial;
    if full.starts_with("THINGY91X") {
        return Some("Thingy:91 X");
    }
    if full.starts_with("THINGY91") || full.starts_with("PCA20035") {
        return Some("Thingy:91");
    }
    for (prefix, name) in [
        ("9600", "nRF9160 DK"),
        ("10509", "nRF9161 DK"),
        ("10512", "nRF9151 DK"),
        ("10520", "nRF9151 DK"),
        ("10510", "nRF9131 EK"),
    ] {
        if s.starts_with(prefix) && full.len() > s.len() {
            return Some(name);
        }
    }
    None
}

/// Every serial port on this machine, Nordic/SEGGER kits first, then by name. Never panics
/// (serialport's Linux scan panics when `/sys/class/tty` is missing, so that is checked first).
pub fn list_ports() -> Vec<PortInfo> {
    #[cfg(target_os = "linux")]
    {
        if !Path::new("/sys/class/tty").is_dir() {
            return Vec::new();
        }
    }
    let found = match std::panic::catch_unwind(serialport::available_ports) {
        Ok(Ok(v)) => v,
        _ => Vec::new(),
    };
    let mut out: Vec<PortInfo> = found
        .into_iter()
        .map(|p| {
            let (kind, usb) = match p.port_type {
                serialport::SerialPortType::UsbPort(u) => (PortKind::Usb, Some(u)),
                serialport::SerialPortType::PciPort => (PortKind::Pci, None),
                serialport::SerialPortType::BluetoothPort => (PortKind::Bluetooth, None),
                serialport::SerialPortType::Unknown => (PortKind::Unknown, None),
            };
            let vid = usb.as_ref().map(|u| u.vid);
            let serial = usb.as_ref().and_then(|u| u.serial_number.clone());
            PortInfo {
                board: serial.as_deref().and_then(board_from_serial),
                nordic: matches!(vid, Some(VID_NORDIC) | Some(VID_SEGGER)),
                name: p.port_name,
                kind,
                vid,
                pid: usb.as_ref().map(|u| u.pid),
                manufacturer: usb.as_ref().and_then(|u| u.manufacturer.clone()),
                product: usb.as_ref().and_then(|u| u.product.clone()),
                serial,
            }
        })
        .collect();
    out.sort_by(|a, b| b.nordic.cmp(&a.nordic).then_with(|| a.name.cmp(&b.name)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boards() {
        assert_eq!(board_from_serial("000960012345"), Some("nRF9160 DK"));
        assert_eq!(board_from_serial("001050912345"), Some("nRF9161 DK"));
        assert_eq!(board_from_serial("THINGY91X_ABC"), Some("Thingy:91 X"));
        assert_eq!(board_from_serial("12345"), None);
    }

    #[test]
    fn listing_never_panics() {
        let _ = list_ports();
    }

    #[test]
    fn missing_port_is_not_found() {
        let e = open("/dev/nrfca-no-such-port", &SerialSettings::default()).unwrap_err();
        assert_eq!(e.kind, OpenErrorKind::NotFound);
        assert!(e.to_string().contains("bench ports"));
    }

    #[test]
    fn pty_opens_with_hardware_flow_control() {
        // A pty ignores RTS/CTS; opening one with flow control on must work.
        use serialport::SerialPort;
        let (mut master, slave) = serialport::TTYPort::pair().expect("pty pair");
        master.set_timeout(Duration::from_secs(2)).unwrap();
        let name = slave.name().expect("slave name");
        drop(slave);
        let mut t = open(&name, &SerialSettings { flow_control: true }).expect("open pty");
        t.set_timeout(Duration::from_millis(500)).unwrap();
        Transport::write_all(&mut t, b"AT\r\n").unwrap();
        let mut buf = [0u8; 16];
        let n = Read::read(&mut master, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"AT\r\n");
        Write::write_all(&mut master, b"OK\r\n").unwrap();
        let n = Transport::read(&mut t, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"OK\r\n");
        t.set_timeout(Duration::from_millis(50)).unwrap();
        let e = Transport::read(&mut t, &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }
}
