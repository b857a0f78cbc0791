//! Simulated nRF91 modems on pseudo-terminals, driven by the tests, `nrfca sim` and the demo.
