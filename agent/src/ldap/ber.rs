//! The subset of BER (X.690) that LDAP messages use: definite lengths, one-byte tags,
//! integers, octet strings, booleans, enumerations and constructed values.

/// Universal tags.
pub const BOOLEAN: u8 = 0x01;
pub const INTEGER: u8 = 0x02;
pub const OCTET_STRING: u8 = 0x04;
pub const ENUMERATED: u8 = 0x0a;
pub const SEQUENCE: u8 = 0x30;
pub const SET: u8 = 0x31;

/// An application-class tag (`[APPLICATION n]`), constructed or primitive.
pub const fn application(n: u8, constructed: bool) -> u8 {
    0x40 | if constructed { 0x20 } else { 0 } | n
}

/// A context-specific tag (`[n]`), constructed or primitive.
pub const fn context(n: u8, constructed: bool) -> u8 {
    0x80 | if constructed { 0x20 } else { 0 } | n
}

/// Appends a tag, length and content.
pub fn put(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = (n as u64).to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (8 - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
}

/// A value built from parts.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    put(&mut out, tag, content);
    out
}

/// A constructed value of the concatenated `parts`.
pub fn constructed(tag: u8, parts: &[Vec<u8>]) -> Vec<u8> {
    tlv(tag, &parts.concat())
}

/// An integer (two's complement, shortest form).
pub fn integer(tag: u8, v: i64) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let mut start = 0;
    while start < 7 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        if (b == 0 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    tlv(tag, &bytes[start..])
}

/// One decoded value: its tag and its content bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// The tag byte.
    pub tag: u8,
    /// The content.
    pub content: &'a [u8],
}

impl<'a> Tlv<'a> {
    /// The content read as an integer.
    pub fn int(&self) -> Result<i64, String> {
        if self.content.is_empty() || self.content.len() > 8 {
            return Err(format!("an integer of {} bytes", self.content.len()));
        }
        let mut v: i64 = if self.content[0] & 0x80 != 0 { -1 } else { 0 };
        for b in self.content {
            v = (v << 8) | i64::from(*b);
        }
        Ok(v)
    }

    /// The content read as text (LDAP strings are UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(self.content).into_owned()
    }

    /// The values inside a constructed value, in order.
    pub fn children(&self) -> Result<Vec<Tlv<'a>>, String> {
        let mut rest = self.content;
        let mut out = Vec::new();
        while !rest.is_empty() {
            let (t, r) = read(rest)?.ok_or("a value is cut short")?;
            out.push(t);
            rest = r;
        }
        Ok(out)
    }
}

/// Reads one value from the front of `bytes`: `None` when `bytes` does not hold all
/// of it yet (read more), an error when it is not BER.
pub fn read(bytes: &[u8]) -> Result<Option<(Tlv<'_>, &[u8])>, String> {
    let Some(&tag) = bytes.first() else {
        return Ok(None);
    };
    if tag & 0x1f == 0x1f {
        return Err(format!(
            "a multi-byte tag (0x{tag:02x}), which LDAP does not use"
        ));
    }
    let Some(total) = needed(bytes)? else {
        return Ok(None);
    };
    let Some(all) = bytes.get(..total) else {
        return Ok(None);
    };
    let head = 2 + if bytes[1] < 0x80 {
        0
    } else {
        (bytes[1] & 0x7f) as usize
    };
    Ok(Some((
        Tlv {
            tag,
            content: &all[head..],
        },
        &bytes[total..],
    )))
}

/// How many bytes the value at the front of `bytes` takes, once its header is there.
pub fn needed(bytes: &[u8]) -> Result<Option<usize>, String> {
    let Some(&first) = bytes.get(1) else {
        return Ok(None);
    };
    if first < 0x80 {
        return Ok(Some(2 + first as usize));
    }
    let n = (first & 0x7f) as usize;
    if n == 0 || n > 4 {
        return Err(format!("a length of {n} bytes"));
    }
    let Some(len_bytes) = bytes.get(2..2 + n) else {
        return Ok(None);
    };
    Ok(Some(
        2 + n + len_bytes.iter().fold(0usize, |a, b| (a << 8) | *b as usize),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_and_lengths_round_trip_in_their_shortest_form() {
        for v in [
            0i64,
            1,
            127,
            128,
            255,
            256,
            -1,
            -128,
            -129,
            i64::MAX,
            i64::MIN,
        ] {
            let enc = integer(INTEGER, v);
            let (t, rest) = read(&enc).unwrap().unwrap();
            assert!(rest.is_empty());
            assert_eq!(t.int().unwrap(), v, "{enc:02x?}");
        }
        assert_eq!(integer(INTEGER, 128), vec![0x02, 0x02, 0x00, 0x80]);
        assert_eq!(integer(INTEGER, -128), vec![0x02, 0x01, 0x80]);
        for n in [0usize, 127, 128, 255, 256, 70_000] {
            let enc = tlv(OCTET_STRING, &vec![7u8; n]);
            assert_eq!(needed(&enc).unwrap(), Some(enc.len()));
            let (t, _) = read(&enc).unwrap().unwrap();
            assert_eq!(t.content.len(), n);
            // Every prefix asks for more; none is an error.
            for cut in 0..enc.len().min(300) {
                assert!(read(&enc[..cut]).unwrap().is_none());
            }
        }
        assert!(read(&[0x1f, 0]).is_err());
        assert!(read(&[0x04, 0x85, 1, 1, 1, 1, 1]).is_err());
    }

    #[test]
    fn constructed_values_hold_their_children() {
        let seq = constructed(
            SEQUENCE,
            &[
                integer(INTEGER, 5),
                tlv(OCTET_STRING, b"cn=x"),
                tlv(BOOLEAN, &[0xff]),
            ],
        );
        let (t, _) = read(&seq).unwrap().unwrap();
        let kids = t.children().unwrap();
        assert_eq!(kids.len(), 3);
        assert_eq!(kids[1].text(), "cn=x");
        assert_eq!(application(3, true), 0x63);
        assert_eq!(context(7, false), 0x87);
    }
}
