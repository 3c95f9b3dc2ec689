//! JSON-RPC errors: the spec's codes, geth's messages for rejected transactions (-32000), and
//! reverts as code 3 with the revert bytes in `data`.

use alloy_primitives::Bytes;
use jsonrpsee::types::ErrorObjectOwned;

/// Invalid method parameters (-32602).
pub fn invalid_params(message: impl Into<String>) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(-32602, message.into(), None::<()>)
}

/// An internal error (-32603).
pub fn internal(message: impl std::fmt::Display) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(-32603, message.to_string(), None::<()>)
}

/// A server error with geth's message (-32000): rejected transactions, unknown blocks.
pub fn server(message: impl std::fmt::Display) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(-32000, message.to_string(), None::<()>)
}

/// A method that exists but is off (-32601 with the method's name).
pub fn unavailable(method: &str) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(-32601, format!("the method {method} does not exist/is not available"), None::<()>)
}

/// A revert (code 3): `execution reverted` plus the decoded reason, the revert bytes in `data`.
pub fn reverted(output: &Bytes) -> ErrorObjectOwned {
    let message = match revert_reason(output) {
        Some(reason) => format!("execution reverted: {reason}"),
        None => "execution reverted".to_string(),
    };
    ErrorObjectOwned::owned(3, message, Some(output.to_string()))
}

/// The reason of an `Error(string)` or `Panic(uint256)` revert.
pub fn revert_reason(output: &[u8]) -> Option<String> {
    let (selector, body) = (output.get(..4)?, output.get(4..)?);
    match selector {
        [0x08, 0xc3, 0x79, 0xa0] => {
            let offset = usize::try_from(u64::from_be_bytes(body.get(24..32)?.try_into().ok()?)).ok()?;
            let length_word = body.get(offset..offset.checked_add(32)?)?;
            let length = usize::try_from(u64::from_be_bytes(length_word[24..32].try_into().ok()?)).ok()?;
            let start = offset.checked_add(32)?;
            let text = body.get(start..start.checked_add(length)?)?;
            Some(String::from_utf8_lossy(text).into_owned())
        }
        [0x4e, 0x48, 0x7b, 0x71] => {
            let code = body.get(..32)?;
            Some(format!("panic: 0x{:02x} ({})", code[31], panic_reason(code[31])))
        }
        _ => None,
    }
}

fn panic_reason(code: u8) -> &'static str {
    match code {
        0x00 => "generic panic",
        0x01 => "assert(false)",
        0x11 => "arithmetic underflow or overflow",
        0x12 => "division or modulo by zero",
        0x21 => "enum overflow",
        0x22 => "invalid encoded storage byte array accessed",
        0x31 => "out-of-bounds array access; popping on an empty array",
        0x32 => "out-of-bounds access of an array or bytesN",
        0x41 => "out of memory",
        0x51 => "uninitialized function",
        _ => "unknown panic code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_error_string() {
        // Error("nope"), ABI-encoded by hand.
        let mut data = vec![0x08, 0xc3, 0x79, 0xa0];
        data.extend([0u8; 31]);
        data.push(0x20);
        data.extend([0u8; 31]);
        data.push(4);
        data.extend(b"nope");
        data.extend([0u8; 28]);
        assert_eq!(revert_reason(&data).as_deref(), Some("nope"));
        assert_eq!(revert_reason(&data[..40]), None);
        assert_eq!(revert_reason(&[1, 2]), None);
    }
}
