-- 004 (both engines): the login limits' counters, shared by every server process.
-- The table of 001 was never used; it is dropped (IF EXISTS: another migration may drop
-- unused tables too) and made again with the end of each window, so that a row whose
-- window has ended counts as absent and one DELETE purges all of them.
-- scope: 'account' and 'ip' (sign-in attempts), 'register-ip' and 'register-name'.
DROP TABLE IF EXISTS login_failures;

CREATE TABLE login_failures (
    scope         TEXT NOT NULL,
    key           TEXT NOT NULL,
    window_end_ms BIGINT NOT NULL,
    count         INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX login_failures_window_end_idx ON login_failures (window_end_ms);
