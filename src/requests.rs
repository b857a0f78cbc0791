//! TODO: requests
