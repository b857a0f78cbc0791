//! The simulator's AT side: `sim::framing::Receiver` (command assembly from raw bytes) feeding
//! `sim::engine::Modem::execute`, whose framed replies are read back by the bench's
//! `bench::at::Parser`. First input byte picks the profile; the rest is what a host sends.
//!
//! Properties: never panics; every command handed on is ≤ 4095 bytes and non-empty; every
//! command gets a reply with a final result (unless the reply overflowed); the bench parser
//! sees that final result in the framed reply.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nrfca::internal::bench::at;
use nrfca::internal::sim::engine::Modem;
use nrfca::internal::sim::fault::FaultSet;
use nrfca::internal::sim::framing::{self, Received, Receiver};
use nrfca::internal::sim::identity::SimIdentity;
use nrfca::internal::sim::rng::SimRng;
use nrfca::internal::sim::storage::Storage;
use nrfca::sim::Profile;

fn modem(profile: Profile) -> Modem {
    let mut rng = SimRng::from_seed(42);
    let id = SimIdentity::generate(profile.tac(), &mut rng, true).expect("identity");
    let st = Storage::new(&id.uuid);
    let f = FaultSet::new(vec![], None, SimRng::from_seed(1));
    let mut m = Modem::new(profile, id, st, f, 0);
    m.boot();
    m
}

fn same_final(a: &framing::Final, b: &at::Final) -> bool {
    match (a, b) {
        (framing::Final::Ok, at::Final::Ok) => true,
        (framing::Final::Error, at::Final::Error) => true,
        (framing::Final::Cme(n), at::Final::Cme(c)) => *n == c.0,
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, input)) = data.split_first() else {
        return;
    };
    let profile = Profile::ALL[usize::from(sel) % Profile::ALL.len()];
    let mut m = modem(profile);
    let mut rx = Receiver::new();
    let mut executed = 0;
    for &b in input {
        let Some(got) = rx.push(b) else { continue };
        executed += 1;
        if executed > 32 {
            break;
        }
        let (cmd, reply) = match got {
            Received::Command(c) => {
                assert!(!c.is_empty() && c.len() < framing::COMMAND_BUFFER);
                let r = m.execute(&c);
                (String::from_utf8_lossy(&c).into_owned(), r)
            }
            Received::Overflow => ("AT".to_string(), m.overflow()),
        };
        let Some(fin) = reply.final_result else {
            continue;
        };
        let bytes = framing::frame(&reply.pieces(), profile.is_slm());
        let mut p = at::Parser::new();
        p.begin(&cmd);
        let seen: Vec<at::Final> = p
            .feed(&bytes)
            .into_iter()
            .filter_map(|e| match e {
                at::Event::Final(f) => Some(f),
                _ => None,
            })
            .collect();
        assert!(
            seen.iter().any(|f| same_final(&fin, f)),
            "modem sent {fin:?} to {:?}, the bench parser saw {seen:?}",
            nrfca::internal::bench::at::summarize_command(&cmd)
        );
        if reply.reset {
            m.boot();
            rx.reset();
        }
    }
});
