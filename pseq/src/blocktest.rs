//! `pseq blocktest`: runs EEST `blockchain_test` fixtures (not yet implemented).
