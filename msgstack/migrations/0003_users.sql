-- Users who log in through the auth service (`python -m msgstack auth`); seeded by
-- `python -m msgstack seed-users`. password_hash is an argon2id PHC string (parameters inside).
CREATE TABLE users (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    username      text NOT NULL UNIQUE,
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
