//! Fuzzes selector parsing. A selector that parses must print back
//! unchanged and rebuild from its type and value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_registration::Selector;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(selector) = Selector::parse(input) else {
        return;
    };
    assert_eq!(selector.to_string(), input);
    assert_eq!(
        Selector::new(selector.kind(), selector.value()).as_ref(),
        Ok(&selector)
    );
});
