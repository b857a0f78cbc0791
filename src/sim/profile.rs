//! What a simulated modem says about itself: the profiles (nRF9160 AT Client, nRF91x1 AT
//! Client, Serial LTE Modem, nRF91x1 with the nRF Connect SDK shell), their identification
//! strings and framing, and the latency model.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Which modem and application firmware the simulator imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// nRF9160 SICA, modem firmware `mfw_nrf9160_1.3.7`, AT Client sample: no framing, CR/LF
    /// termination, CSRs with the NULL-parameter quirk, no `%DEVICEUUID`. The default.
    #[default]
    Nrf9160,
    /// nRF9161 LACA, modem firmware `mfw_nrf91x1_2.0.2`, AT Client sample: adds `%DEVICEUUID`,
    /// refuses unparseable PEM for %CMNG types 0 and 1 with `+CME ERROR: 527`, accepts the
    /// TLS-decrypt sec_tags 2147483648–2147483667.
    Nrf91x1,
    /// The Serial LTE Modem application on an nRF9160 (mfw 1.3.7): TS 27.007 "V1" framing
    /// (`\r\n<info>\r\n\r\nOK\r\n`), `Ready` banner, `AT#XSLMVER`, `AT#XNRFCLOUD?`, `AT#XRESET`.
    Slm,
    /// An nRF9161 LACA (mfw 2.0.2) running an nRF Connect SDK application with the shell
    /// (Multi-Service Sample style): AT commands only as `at <command>` (with
    /// `CONFIG_AT_SHELL_UNESCAPE_LF`), every typed line echoed, a `uart:~$ ` prompt after
    /// every answer, anything else `<name>: command not found`.
    Shell,
    /// nRF9151 LACA, mfw 2.0.2 (the nRF91x1 firmware), AT Client: as `nrf91x1` but its own
    /// model, hardware version and ATTESTTOKEN device type (6).
    Nrf9151,
    /// nRF9131 LACA, mfw 2.0.2, AT Client: device type 5.
    Nrf9131,
    /// nRF9151 LACA on the NTN (satellite) modem firmware `mfw_nrf9151-ntn_1.0.0-1.alpha` (as
    /// in the real capture EX-10), with its own firmware UUID.
    Nrf9151Ntn,
}

impl Profile {
    /// All profiles, in the order of their names.
    pub const ALL: [Profile; 7] = [
        Profile::Nrf9160,
        Profile::Nrf91x1,
        Profile::Slm,
        Profile::Shell,
        Profile::Nrf9151,
        Profile::Nrf9131,
        Profile::Nrf9151Ntn,
    ];

    /// The `--profile` name.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Nrf9160 => "nrf9160",
            Profile::Nrf91x1 => "nrf91x1",
            Profile::Slm => "slm",
            Profile::Shell => "shell",
            Profile::Nrf9151 => "nrf9151",
            Profile::Nrf9131 => "nrf9131",
            Profile::Nrf9151Ntn => "nrf9151-ntn",
        }
    }

    /// True for the nRF91x1 family (mfw 2.x).
    pub fn is_91x1(self) -> bool {
        !matches!(self, Profile::Nrf9160 | Profile::Slm)
    }

    /// True when `AT%KEYGEN=<tag>,14,2` (a self-signed certificate) is known: nRF91x1 mfw
    /// 2.0.2 and later; not mfw 1.3.x, not the NTN 1.0.0 alpha (reference §7).
    pub fn knows_keygen_type_14(self) -> bool {
        self.firmware().starts_with("mfw_nrf91x1_2.")
    }

    /// True when the modem sits behind the nRF Connect SDK shell.
    pub fn is_shell(self) -> bool {
        matches!(self, Profile::Shell)
    }

    /// True when replies use Serial LTE Modem framing.
    pub fn is_slm(self) -> bool {
        matches!(self, Profile::Slm)
    }

    /// `AT+CGMR`.
    pub fn firmware(self) -> &'static str {
        match self {
            Profile::Nrf9160 | Profile::Slm => "mfw_nrf9160_1.3.7",
            Profile::Nrf9151Ntn => "mfw_nrf9151-ntn_1.0.0-1.alpha",
            _ => "mfw_nrf91x1_2.0.2",
        }
    }

    /// `AT%SHORTSWVER` value.
    pub fn short_sw_version(self) -> &'static str {
        match self {
            Profile::Nrf9160 | Profile::Slm => "nrf9160_1.3.7",
            Profile::Nrf9151Ntn => "nrf9151-ntn_1.0.0",
            _ => "nrf91x1_2.0.2",
        }
    }

    /// `AT+CGMM`.
    pub fn model(self) -> &'static str {
        match self {
            Profile::Nrf9160 | Profile::Slm => "nRF9160-SICA",
            Profile::Nrf9151 | Profile::Nrf9151Ntn => "nRF9151-LACA",
            Profile::Nrf9131 => "nRF9131-LACA",
            Profile::Nrf91x1 | Profile::Shell => "nRF9161-LACA",
        }
    }

    /// `AT%HWVERSION` value.
    pub fn hw_version(self) -> &'static str {
        match self {
            Profile::Nrf9160 | Profile::Slm => "nRF9160 SICA B1A",
            Profile::Nrf9151 | Profile::Nrf9151Ntn => "nRF9151 LACA ADA",
            Profile::Nrf9131 => "nRF9131 LACA ADA",
            Profile::Nrf91x1 | Profile::Shell => "nRF9161 LACA ADA",
        }
    }

    /// The modem firmware build UUID (`AT%XMODEMUUID`, ATTESTTOKEN element 3). Fixed per
    /// firmware build, so the same for every simulated modem of a profile.
    pub fn firmware_uuid(self) -> [u8; 16] {
        if self == Profile::Nrf9151Ntn {
            [
                0x6e, 0x0f, 0x2b, 0x91, 0x3c, 0x58, 0x4d, 0x1e, 0x9a, 0x07, 0x52, 0xe4, 0x18, 0xc3,
                0x7d, 0x20,
            ]
        } else if self.is_91x1() {
            [
                0x1a, 0xff, 0x3a, 0xcb, 0xf1, 0xa6, 0x47, 0x64, 0xa2, 0x63, 0x4c, 0x26, 0x46, 0xc1,
                0xc6, 0x54,
            ]
        } else {
            [
                0x25, 0xc9, 0x57, 0x51, 0xef, 0xa4, 0x40, 0xd4, 0x8b, 0x4a, 0x1d, 0xca, 0xab, 0x81,
                0xfa, 0xc9,
            ]
        }
    }

    /// ATTESTTOKEN device type (3 nRF9160 SICA, 4 nRF9161 LACA, 5 nRF9131 LACA, 6 nRF9151
    /// LACA, as nrfcloud-utils names them).
    pub fn device_type(self) -> u8 {
        match self {
            Profile::Nrf9160 | Profile::Slm => 3,
            Profile::Nrf91x1 | Profile::Shell => 4,
            Profile::Nrf9131 => 5,
            Profile::Nrf9151 | Profile::Nrf9151Ntn => 6,
        }
    }

    /// First eight IMEI digits (type allocation code) of this kind of board.
    pub fn tac(self) -> &'static str {
        if self.is_91x1() {
            "35940423"
        } else {
            "35265610"
        }
    }

    /// Lines printed at boot (before any command).
    pub fn banner(self) -> &'static [&'static str] {
        if self.is_slm() {
            &["Ready"]
        } else if self.is_shell() {
            &[
                "*** Booting nRF Connect SDK v2.6.1-3758bcbfa5cd ***",
                "[00:00:00.251,678] <inf> multi_service: Multi-service sample has started",
            ]
        } else {
            &[
                "*** Booting nRF Connect SDK v2.6.1-3758bcbfa5cd ***",
                "The AT host sample started",
                "Ready",
            ]
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let l = s.trim().to_ascii_lowercase();
        match l.as_str() {
            "nrf9160" | "9160" => Ok(Profile::Nrf9160),
            "nrf91x1" | "91x1" | "nrf9161" => Ok(Profile::Nrf91x1),
            "nrf9151" | "9151" => Ok(Profile::Nrf9151),
            "nrf9131" | "9131" => Ok(Profile::Nrf9131),
            "nrf9151-ntn" | "ntn" => Ok(Profile::Nrf9151Ntn),
            "slm" | "serial-lte-modem" => Ok(Profile::Slm),
            "shell" | "nrf9161-shell" | "mss" => Ok(Profile::Shell),
            _ => Err(format!(
                "unknown profile `{s}`; use one of nrf9160, nrf91x1, nrf9151, nrf9131, nrf9151-ntn, slm, shell"
            )),
        }
    }
}

/// How long the simulated modem takes to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Latency {
    /// Answer at once (unit tests).
    None,
    /// A few milliseconds with jitter (integration tests). The default.
    #[default]
    Test,
    /// Plausible bench timings: ~10–40 ms for queries, 0.2–0.8 s for `AT+CFUN`, 0.1–0.3 s
    /// for `%CMNG` writes (flash), 1–3 s for `%KEYGEN`; output paced at 115200 baud.
    /// No published measurements exist (modem-at-protocol.md §8); these stay well inside
    /// Nordic's own timeouts (15 s per command).
    Realistic,
}

impl Latency {
    /// The `--latency` name.
    pub fn name(self) -> &'static str {
        match self {
            Latency::None => "none",
            Latency::Test => "test",
            Latency::Realistic => "realistic",
        }
    }

    /// (minimum, spread) of the processing delay for a command class.
    pub fn delay_range(self, class: CommandClass) -> (Duration, Duration) {
        let ms = Duration::from_millis;
        match self {
            Latency::None => (Duration::ZERO, Duration::ZERO),
            Latency::Test => match class {
                CommandClass::Keygen => (ms(5), ms(10)),
                CommandClass::Cfun | CommandClass::Write => (ms(2), ms(4)),
                CommandClass::Query => (ms(0), ms(3)),
            },
            Latency::Realistic => match class {
                CommandClass::Keygen => (ms(1000), ms(2000)),
                CommandClass::Cfun => (ms(200), ms(600)),
                CommandClass::Write => (ms(100), ms(200)),
                CommandClass::Query => (ms(10), ms(30)),
            },
        }
    }

    /// Bytes per millisecond the output is paced at (None = as fast as the pty takes it).
    pub fn bytes_per_ms(self) -> Option<usize> {
        match self {
            Latency::Realistic => Some(11),
            _ => None,
        }
    }

    /// How long the port stays gone after a simulated unplug.
    pub fn replug_delay(self) -> Duration {
        match self {
            Latency::None => Duration::from_millis(50),
            Latency::Test => Duration::from_millis(100),
            Latency::Realistic => Duration::from_millis(1500),
        }
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Latency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" | "0" => Ok(Latency::None),
            "test" => Ok(Latency::Test),
            "realistic" | "real" => Ok(Latency::Realistic),
            _ => Err(format!(
                "unknown latency `{s}`; use one of none, test, realistic"
            )),
        }
    }
}

/// Coarse classes of commands for the latency model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandClass {
    /// Reads and identification.
    Query,
    /// `AT+CFUN=` (may need network detach).
    Cfun,
    /// `%CMNG` write / delete (flash).
    Write,
    /// `%KEYGEN` (key generation and signing).
    Keygen,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Profile::ALL {
            assert_eq!(p.name().parse::<Profile>(), Ok(p));
        }
        for l in [Latency::None, Latency::Test, Latency::Realistic] {
            assert_eq!(l.name().parse::<Latency>(), Ok(l));
        }
        assert!("x".parse::<Profile>().is_err());
    }
}
