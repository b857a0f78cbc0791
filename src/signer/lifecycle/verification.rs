//! `nrfca ca verification-cert`: the certificate AWS IoT asks for when a CA is registered
//! (CN = the registration code AWS gives, signed by the CA, with its own throwaway key).
