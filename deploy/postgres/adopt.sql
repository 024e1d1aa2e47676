-- Hand a database (and everything in its public schema) to finn_owner, the role migrations run
-- as. Idempotent; `make run` runs it on every start (a database created before the two roles
-- existed belongs to postgres). Needs a superuser.
DO $$
DECLARE
  r record;
BEGIN
  EXECUTE format('ALTER DATABASE %I OWNER TO finn_owner', current_database());
  FOR r IN SELECT tablename AS name FROM pg_tables WHERE schemaname = 'public' AND tableowner <> 'finn_owner' LOOP
    EXECUTE format('ALTER TABLE public.%I OWNER TO finn_owner', r.name);
  END LOOP;
  FOR r IN SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND c.relkind = 'S' AND pg_get_userbyid(c.relowner) <> 'finn_owner' LOOP
    EXECUTE format('ALTER SEQUENCE public.%I OWNER TO finn_owner', r.name);
  END LOOP;
  FOR r IN SELECT p.oid::regprocedure AS sig FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) <> 'finn_owner' LOOP
    EXECUTE format('ALTER FUNCTION %s OWNER TO finn_owner', r.sig);
  END LOOP;
END $$;
