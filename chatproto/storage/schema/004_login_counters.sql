-- 004 (both engines): the login limits' counters, shared by every server process.
-- The table of 001 was never used; its rows (none) are dropped. A counter's window ends at
-- window_end_ms; a row whose window has ended counts as absent and may be deleted.
-- scope: 'account' and 'ip' (sign-in attempts), 'register-ip' and 'register-name'.
DROP TABLE login_failures;

CREATE TABLE login_failures (
    scope         TEXT NOT NULL,
    key           TEXT NOT NULL,
    window_end_ms BIGINT NOT NULL,
    count         INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX login_failures_window_end_idx ON login_failures (window_end_ms);
