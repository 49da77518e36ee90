//! The open-file limit: every connection is a file descriptor, and the usual soft limit (1024)
//! is below what `--max-connections` may ask for. Raised towards the hard limit at start-up, as
//! nginx and Go servers do, and reported when even that is too low.

/// Raises the soft `RLIMIT_NOFILE` to at least `want` if the hard limit allows; returns the
/// soft limit in force afterwards (None where it cannot be read).
pub fn raise_to(want: u64) -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    // rlim_t is u64 on the 64-bit Linux this serves on.
    if limit.rlim_cur >= want {
        return Some(limit.rlim_cur);
    }
    let raised = libc::rlimit { rlim_cur: want.min(limit.rlim_max), rlim_max: limit.rlim_max };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return Some(raised.rlim_cur);
    }
    Some(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_limit_is_never_lowered_and_reaches_a_modest_want() {
        let now = super::raise_to(0).expect("Linux reports RLIMIT_NOFILE");
        assert!(now > 0);
        assert_eq!(super::raise_to(now), Some(now), "asking for what is there changes nothing");
        assert!(super::raise_to(now + 1).unwrap() >= now);
    }
}
