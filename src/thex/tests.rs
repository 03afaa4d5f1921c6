use super::*;

fn hex(t: &Tth) -> String {
    t.to_hex()
}

fn pattern(len: usize, m: usize) -> Vec<u8> {
    (0..len).map(|j| (j % m) as u8).collect()
}

#[test]
fn plain_tiger_is_not_tiger2() {
    let h: [u8; 24] = Tiger::digest(b"abc").into();
    assert_eq!(
        Tth(h).to_hex(),
        "2aab1484e8c158f2bfb8c5ff41b57a525129131c957b5f93"
    );
}

/// SWARM.md §3.6, the roots also compiled into gtk-gnutella's self-test.
#[test]
fn roots_match_the_vectors() {
    let cases: [(Vec<u8>, &str); 8] = [
        (vec![], "LWPNACQDBZRYXW3VHJVCJ64QBZNGHOHHHZWCLNQ"),
        (vec![0], "VK54ZIEEVTWNAUI5D5RDFIL37LX2IQNSTAXFKSA"),
        (vec![b'A'; 1024], "L66Q4YVNAFWVS23X2HJIRA5ZJ7WXR3F26RSASFA"),
        (vec![b'A'; 1025], "PZMRYHGY6LTBEH63ZWAHDORHSYTLO4LEFUIKHWY"),
        (vec![b'A'; 2048], "FSINHKGFD6E3PHTXSA5EATMEO7IND3ATJDSH45A"),
        (vec![b'A'; 3072], "VUGTDEB5E3RVBHJWEPT2LY2O6XHZQFFRGDNZBSQ"),
        (
            pattern(1 << 20, 256),
            "IUHOXFDC3H6J4BH7DMITVRGNXOI5L6QMXFCLS3A",
        ),
        (
            pattern(525_288, 251),
            "P3C26NW4U3OHJJIHCLBHJRKNUGGB2BDJJFPFZZY",
        ),
    ];
    for (data, want) in cases {
        assert_eq!(
            HashTree::of(&data).root().to_string(),
            want,
            "{} bytes",
            data.len()
        );
        // Fed in odd pieces, the same.
        for step in [1, 7, 1023, 1025, 65537] {
            let mut h = TreeHasher::new();
            for c in data.chunks(step) {
                h.update(c);
            }
            assert_eq!(h.finish().root().to_string(), want, "step {step}");
        }
    }
    let big = pattern(8 << 20, 253);
    assert_eq!(
        HashTree::of(&big).root().to_string(),
        "GDSPO3SHQETKJXTAW2KF5RO7BTWSH4PHCEEEICQ"
    );
}

#[test]
fn the_525288_byte_tree_has_gtk_gnutellas_nodes_in_wire_order() {
    let t = HashTree::of(&pattern(525_288, 251));
    assert_eq!(t.depth(), 2);
    assert_eq!(t.slice(), 256 * 1024);
    let nodes: Vec<String> = t
        .breadth_first()
        .chunks(24)
        .map(|c| Tth(c.try_into().unwrap()).to_hex())
        .collect();
    assert_eq!(
        nodes,
        [
            "7ec5af36dca6dc74a50712c274c54da18c1d0469495e5ce7",
            "b0a836484179914d197e05a0b00ec0a2a1708f3dd63b64e4",
            "9bf4522b424f5f38038575699314a1890c8da074b0167516",
            "bf7e9ed498982b0c93b623df38aa3717ba3d07fe86549fb1",
            "adeb2d4e5f8443a2b01d8021028568bca4b876116971046b",
            "9bf4522b424f5f38038575699314a1890c8da074b0167516",
        ]
    );
    let data = pattern(525_288, 251);
    assert!(t.verify_slice(1, &data[262_144..524_288]));
    assert!(!t.verify_slice(0, &data[262_144..524_288]));
    assert_eq!(
        hex(&leaf(b"A")),
        "2ef661ce4d28b0b94251deae541f6340c32097868ae9ff54"
    );
}

/// SWARM.md §3.3's table, row by row.
#[test]
fn depths_and_slices_follow_gtk_gnutella() {
    const KI: u64 = 1024;
    const MI: u64 = 1024 * KI;
    let rows = [
        (100 * KI, 0, 1, 100 * KI),
        (256 * KI, 1, 2, 128 * KI),
        (512 * KI, 2, 4, 128 * KI),
        (MI, 3, 8, 128 * KI),
        (MI + 1, 3, 5, 256 * KI),
        (10 * MI, 6, 40, 256 * KI),
        (100 * MI, 9, 400, 256 * KI),
        (255 * MI, 9, 510, 512 * KI),
        (256 * MI, 10, 1024, 256 * KI),
        (700 * MI, 10, 700, MI),
        (1024 * MI - 1, 10, 1024, MI),
        (1024 * MI, 11, 2048, 512 * KI),
        (4096 * MI, 11, 2048, 2 * MI),
    ];
    for (size, depth, nodes, slice) in rows {
        assert_eq!(good_depth(size), depth, "{size}");
        assert_eq!(node_count_at_depth(size, depth), nodes, "{size}");
        // Below 256 KiB the only node is the root: the slice is the whole file.
        assert_eq!(slice_size(size).min(size.max(1)), slice.min(size), "{size}");
    }
}

/// The 1024 × `A` message gtk-gnutella served live (SWARM.md §3.6): headers and length.
#[test]
fn thex_messages_are_gtk_gnutellas_and_parse_back() {
    let data = vec![b'A'; 1024];
    let t = HashTree::of(&data);
    let m = encode_thex(&t);
    assert_eq!(m.len(), 540);
    assert_eq!(&m[..12], &[0x0c, 0x10, 0, 0, 0, 0, 0, 8, 0, 0, 1, 0x86]);
    assert_eq!(
        &m[412..424],
        &[0x0a, 0x20, 0, 0, 0, 0x29, 0, 0x2e, 0, 0, 0, 0x18]
    );
    assert!(String::from_utf8_lossy(&m).contains("uuid:620ebd5f-01ad-596d-776b-8388d2d14fb9"));
    assert_eq!(parse_thex(&m, 1024, &t.root()), Ok(t.clone()));
    let big = pattern(525_288, 251);
    let bt = HashTree::of(&big);
    let bm = encode_thex(&bt);
    assert_eq!(bm.len(), 660);
    assert_eq!(
        &bm[412..424],
        &[0x0a, 0x20, 0, 0, 0, 0x29, 0, 0x2e, 0, 0, 0, 0x90]
    );
    assert_eq!(parse_thex(&bm, 525_288, &bt.root()), Ok(bt.clone()));
    // What a careful receiver refuses.
    assert_eq!(
        parse_thex(&bm, 525_287, &bt.root()).unwrap_err().code(),
        "thex-wrong-size"
    );
    assert_eq!(
        parse_thex(&bm, 525_288, &t.root()).unwrap_err().code(),
        "thex-wrong-root"
    );
    let mut tampered = bm.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert_eq!(
        parse_thex(&tampered, 525_288, &bt.root())
            .unwrap_err()
            .code(),
        "thex-inconsistent"
    );
    for cut in 0..bm.len() {
        assert!(
            parse_thex(&bm[..cut], 525_288, &bt.root()).is_err(),
            "cut at {cut}"
        );
    }
}

#[test]
fn hostile_dime_is_refused_without_panic() {
    let ok = encode_thex(&HashTree::of(b"x"));
    let mut x = ok.clone();
    x[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(dime::parse(&x).unwrap_err().code(), "dime-past-end");
    let mut v = ok.clone();
    v[0] = 0x2c;
    assert_eq!(dime::parse(&v).unwrap_err().code(), "dime-version");
    let mut b = ok.clone();
    b[0] &= !0x04;
    assert_eq!(dime::parse(&b).unwrap_err().code(), "dime-no-begin");
    let mut c = ok.clone();
    c[0] |= 0x01;
    assert_eq!(dime::parse(&c).unwrap_err().code(), "dime-chunked");
    assert_eq!(
        dime::parse(&vec![0; MAX_MESSAGE + 1]).unwrap_err().code(),
        "dime-too-large"
    );
    // Pseudo-random bytes: an error, never a panic.
    let mut s = 0x9e3779b97f4a7c15u64;
    for _ in 0..5000 {
        let n = (s % 200) as usize;
        let bytes: Vec<u8> = (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s as u8
            })
            .collect();
        let _ = parse_thex(&bytes, 1, &Tth([0; 24]));
    }
}

#[test]
fn urn_forms_parse() {
    let (sha1, tth) = parse_bitprint(
        "urn:bitprint:3I42H3S6NNFQ2MSVX7XZKYAYSCX5QBYJ.LWPNACQDBZRYXW3VHJVCJ64QBZNGHOHHHZWCLNQ",
    )
    .unwrap();
    assert_eq!(sha1[0], 0xda);
    assert_eq!(tth.to_string(), "LWPNACQDBZRYXW3VHJVCJ64QBZNGHOHHHZWCLNQ");
    assert_eq!(
        parse_tree_urn("urn:tree:tiger:lwpnacqdbzryxw3vhjvcj64qbznghohhhzwclnq"),
        Ok(tth)
    );
    assert_eq!(
        parse_tree_urn("urn:ttroot:LWPNACQDBZRYXW3VHJVCJ64QBZNGHOHHHZWCLNQ"),
        Ok(tth)
    );
    assert!(parse_bitprint("urn:sha1:X").is_err());
    let uri = thex_uri("ORWD6TJINRJR4BS6RL3W4CWAQ2EDDRVU", &tth);
    assert_eq!(
        parse_thex_uri(&uri),
        Some((uri.split(';').next().unwrap().into(), tth))
    );
    assert_eq!(
        parse_thex_uri("http://x/;LWPNACQDBZRYXW3VHJVCJ64QBZNGHOHHHZWCLNQ"),
        None
    );
}

#[test]
fn a_truncated_tree_keeps_its_root_and_upper_levels_and_parses_as_a_shallower_one() {
    let size = 32u64 << 20;
    let depth = good_depth(size);
    assert_eq!(depth, 8);
    let n = node_count_at_depth(size, depth) as usize;
    let lowest: Vec<Tth> = (0..n)
        .map(|i| {
            let mut t = [0u8; 24];
            t[..8].copy_from_slice(&(i as u64).to_le_bytes());
            Tth(t)
        })
        .collect();
    let tree = HashTree::from_lowest(size, lowest).unwrap();
    let cut = tree.truncated(6);
    assert_eq!(cut.depth(), 6);
    assert_eq!(cut.root(), tree.root());
    assert_eq!(cut.lowest().len() as u64, node_count_at_depth(size, 6));
    assert_eq!(cut.slice(), tree.slice() * 4);
    // It is the same tree from the root down, and reads back as one of depth 6.
    let full = tree.breadth_first();
    let part = cut.breadth_first();
    assert_eq!(&full[..part.len()], &part[..]);
    let back = parse_thex(&encode_thex(&cut), size, &tree.root()).unwrap();
    assert_eq!(back, cut);
    assert_eq!(tree.truncated(20), tree);
}
