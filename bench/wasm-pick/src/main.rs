// The same source as the native example, so both measure the same code.
include!("../../../bandit/examples/pick_loop.rs");
