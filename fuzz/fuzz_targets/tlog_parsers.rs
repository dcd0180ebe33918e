//! Transparency-log inputs from the network: tile paths, signed notes, checkpoint bodies,
//! entry bundles and tiles (a monitor or `log verify` reads them from an untrusted mirror).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(id) = custos_tlog::tile::TileId::parse(s) {
            assert_eq!(id.path(), s);
        }
        let _ = custos_tlog::note::parse(s);
        let _ = custos_tlog::checkpoint::Checkpoint::parse(s);
        let _ = custos_tlog::note::Verifier::parse(s);
    }
    let _ = custos_tlog::tile::parse_bundle(data);
    let _ = custos_tlog::tile::tile_hashes(data);
});
