//! TODO: signer::secret
