# The composite's own user and database on the deployed PostgreSQL (RegimeBlend's portfolio,
# reservations, fills and decision log; it migrates its schema itself). Run by the postgres
# image once, on an empty data directory; on an existing cluster run it by hand with psql.
# The password comes from the secret (REGIME_BLEND_DB_PASSWORD), never from this file.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --set=password="$REGIME_BLEND_DB_PASSWORD" <<'SQL'
CREATE ROLE regime_blend LOGIN PASSWORD :'password';
CREATE DATABASE regime_blend OWNER regime_blend;
SQL
