"""Reserve, commit and release as one plpgsql call each: one round trip per operation.

Each function does what the Python services did in five statements — the entry's
compare-and-set, the guarded account UPDATE, the agent's daily cap, the journal and its
postings, the audit row (canonical JSON + CRC32, exactly as finn.audit writes it) — and
returns what the response needs. Called outside a transaction the call is its own
transaction; a refusal RAISEs (nothing is written) with MESSAGE = a stable code and DETAIL
= JSON for the error body, and the Python side explains it on the cold path. The CHECKs,
the transition trigger, the zero-sum constraint trigger and the append-only triggers still
hold the line underneath.
"""

from django.db import migrations

CRC32 = """
CREATE OR REPLACE FUNCTION finn_crc32(data text) RETURNS varchar LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
  -- zlib's CRC-32 (reflected 0xEDB88320), as Python's zlib.crc32 computes it over UTF-8.
  tab constant bigint[] := '{0,1996959894,3993919788,2567524794,124634137,1886057615,3915621685,2657392035,249268274,2044508324,3772115230,2547177864,162941995,2125561021,3887607047,2428444049,498536548,1789927666,4089016648,2227061214,450548861,1843258603,4107580753,2211677639,325883990,1684777152,4251122042,2321926636,335633487,1661365465,4195302755,2366115317,997073096,1281953886,3579855332,2724688242,1006888145,1258607687,3524101629,2768942443,901097722,1119000684,3686517206,2898065728,853044451,1172266101,3705015759,2882616665,651767980,1373503546,3369554304,3218104598,565507253,1454621731,3485111705,3099436303,671266974,1594198024,3322730930,2970347812,795835527,1483230225,3244367275,3060149565,1994146192,31158534,2563907772,4023717930,1907459465,112637215,2680153253,3904427059,2013776290,251722036,2517215374,3775830040,2137656763,141376813,2439277719,3865271297,1802195444,476864866,2238001368,4066508878,1812370925,453092731,2181625025,4111451223,1706088902,314042704,2344532202,4240017532,1658658271,366619977,2362670323,4224994405,1303535960,984961486,2747007092,3569037538,1256170817,1037604311,2765210733,3554079995,1131014506,879679996,2909243462,3663771856,1141124467,855842277,2852801631,3708648649,1342533948,654459306,3188396048,3373015174,1466479909,544179635,3110523913,3462522015,1591671054,702138776,2966460450,3352799412,1504918807,783551873,3082640443,3233442989,3988292384,2596254646,62317068,1957810842,3939845945,2647816111,81470997,1943803523,3814918930,2489596804,225274430,2053790376,3826175755,2466906013,167816743,2097651377,4027552580,2265490386,503444072,1762050814,4150417245,2154129355,426522225,1852507879,4275313526,2312317920,282753626,1742555852,4189708143,2394877945,397917763,1622183637,3604390888,2714866558,953729732,1340076626,3518719985,2797360999,1068828381,1219638859,3624741850,2936675148,906185462,1090812512,3747672003,2825379669,829329135,1181335161,3412177804,3160834842,628085408,1382605366,3423369109,3138078467,570562233,1426400815,3317316542,2998733608,733239954,1555261956,3268935591,3050360625,752459403,1541320221,2607071920,3965973030,1969922972,40735498,2617837225,3943577151,1913087877,83908371,2512341634,3803740692,2075208622,213261112,2463272603,3855990285,2094854071,198958881,2262029012,4057260610,1759359992,534414190,2176718541,4139329115,1873836001,414664567,2282248934,4279200368,1711684554,285281116,2405801727,4167216745,1634467795,376229701,2685067896,3608007406,1308918612,956543938,2808555105,3495958263,1231636301,1047427035,2932959818,3654703836,1088359270,936918000,2847714899,3736837829,1202900863,817233897,3183342108,3401237130,1404277552,615818150,3134207493,3453421203,1423857449,601450431,3009837614,3294710456,1567103746,711928724,3020668471,3272380065,1510334235,755167117}'::bigint[];
  bytes constant bytea := convert_to(data, 'UTF8');
  crc bigint := 4294967295;
  i int;
BEGIN
  FOR i IN 0..length(bytes) - 1 LOOP
    crc := tab[((crc # get_byte(bytes, i)) & 255) + 1] # (crc >> 8);
  END LOOP;
  RETURN lpad(to_hex(crc # 4294967295), 8, '0');
END $$;
"""

AUDIT = """
CREATE OR REPLACE FUNCTION billing_audit_transition(
  p_event varchar, p_entry billing_billingentry, p_from varchar, p_now timestamptz, p_reason text,
  p_charged bigint, p_requested bigint
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  -- Canonical JSON as finn.audit.canonical_json writes the payload of _audit_transition:
  -- sorted keys, no spaces, amounts as decimal strings (release adds its reason; the
  -- daily-cap record adds the charged and requested actual costs).
  payload text;
BEGIN
  payload := '{"account_id":' || to_json(p_entry.account_id::text)::text
    || ',"actual_cost":' || coalesce(to_json(p_entry.actual_cost::text)::text, 'null');
  IF p_charged IS NOT NULL THEN
    payload := payload || ',"charged_actual_cost":' || to_json(p_charged::text)::text;
  END IF;
  payload := payload || ',"estimated_cost":' || to_json(p_entry.estimated_cost::text)::text
    || ',"from_state":' || to_json(p_from)::text;
  IF p_event = 'billing_release' THEN
    payload := payload || ',"reason":' || to_json(p_entry.release_reason::text)::text;
  END IF;
  IF p_requested IS NOT NULL THEN
    payload := payload || ',"requested_actual_cost":' || to_json(p_requested::text)::text;
  END IF;
  payload := payload || ',"to_state":' || to_json(p_entry.state::text)::text || '}';
  INSERT INTO finn_auditevent (schema_version, event_type, billing_entry_id, account_id, correlation_id,
    actor, reason, payload, crc32, created_at)
  VALUES (1, p_event, p_entry.id, p_entry.account_id, p_entry.correlation_id, '', coalesce(p_reason, ''),
    payload::jsonb, finn_crc32(payload), p_now);
END $$;
"""

RESERVE = """
CREATE OR REPLACE FUNCTION billing_entry_reserve(
  p_id varchar, p_account bigint, p_correlation varchar, p_estimate bigint, p_cu_per_usd bigint,
  p_rate numeric, p_now timestamptz, p_expires timestamptz, p_idempotency_key varchar,
  p_exposure_limit bigint, p_audit_payload text, p_audit_crc varchar, p_bypass boolean
) RETURNS TABLE (available bigint, held bigint, version bigint, daily_cap bigint, refill_threshold bigint,
                 cap_day date, day_spent bigint, day_held bigint)
LANGUAGE plpgsql AS $$
DECLARE
  acct record;
  counted record;
  journal bigint;
  v_day date;
BEGIN
  -- The entry first: a concurrent request with the same idempotency key waits on the unique
  -- index here and stops before touching the account row.
  INSERT INTO billing_billingentry (id, account_id, correlation_id, state, estimated_cost, actual_cost,
    credit_units_per_usd, usd_usdc_rate, rate_frozen_at, expires_at, finalize_attempts, idempotency_key,
    release_reason, void_reason, voided_by, created_at, updated_at, fence_token, finalize_last_error)
  VALUES (p_id, p_account, p_correlation, 'RESERVE_HELD', p_estimate, NULL, p_cu_per_usd, p_rate, p_now,
    p_expires, 0, p_idempotency_key, '', '', '', p_now, p_now, 0, '')
  ON CONFLICT (account_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'idempotent_replay';
  END IF;
  -- The conditional UPDATE is the funds check: it holds the row lock until commit, so
  -- concurrent reserves on one account serialize here.
  UPDATE billing_account a SET available = a.available - p_estimate, held = a.held + p_estimate,
    version = a.version + 1
  WHERE a.id = p_account AND a.kind <> 'system' AND NOT a.reserves_frozen
    AND a.available + a.credit_limit >= p_estimate
    AND (SELECT COALESCE(SUM(e.actual_cost), 0) FROM billing_billingentry e WHERE e.account_id = p_account
         AND e.state IN ('FINALIZE_PENDING', 'FINALIZE_FAILED')) <= p_exposure_limit
  RETURNING a.available, a.held, a.version, a.daily_cap, a.refill_threshold INTO acct;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'reserve_refused';
  END IF;
  IF acct.held < p_estimate AND NOT p_bypass THEN
    RAISE EXCEPTION 'invariant_violation' USING DETAIL = 'reserve_within_allocation';
  END IF;
  available := acct.available; held := acct.held; version := acct.version;
  daily_cap := acct.daily_cap; refill_threshold := acct.refill_threshold;
  IF acct.daily_cap IS NOT NULL THEN
    v_day := (p_now AT TIME ZONE 'UTC')::date;
    INSERT INTO billing_dailyspend AS d (account_id, day, spent, held)
    SELECT p_account, v_day, 0, p_estimate WHERE p_estimate <= acct.daily_cap
    ON CONFLICT (account_id, day) DO UPDATE SET held = d.held + EXCLUDED.held
    WHERE d.spent + d.held + EXCLUDED.held <= acct.daily_cap
    RETURNING d.spent, d.held INTO counted;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'daily_cap_exceeded' USING DETAIL = v_day::text;
    END IF;
    cap_day := v_day; day_spent := counted.spent; day_held := counted.held;
    UPDATE billing_billingentry b SET cap_day = v_day WHERE b.id = p_id;
  END IF;
  INSERT INTO billing_journalentry (billing_entry_id, event_type, correlation_id, exchange_rate,
    rounding_direction, idempotency_key, created_at)
  VALUES (p_id, 'billing_reserve', p_correlation, NULL, '', NULL, p_now) RETURNING id INTO journal;
  INSERT INTO billing_posting (journal_entry_id, account_id, bucket, delta, denomination)
  VALUES (journal, p_account, 'available', -p_estimate, 'micro_usd'),
         (journal, p_account, 'held', p_estimate, 'micro_usd');
  INSERT INTO finn_auditevent (schema_version, event_type, billing_entry_id, account_id, correlation_id,
    actor, reason, payload, crc32, created_at)
  VALUES (1, 'billing_reserve', p_id, p_account, p_correlation, '', '', p_audit_payload::jsonb, p_audit_crc, p_now);
  RETURN NEXT;
END $$;
"""

COMMIT = """
CREATE OR REPLACE FUNCTION billing_entry_commit(
  p_id varchar, p_account bigint, p_actual bigint, p_now timestamptz, p_revenue bigint,
  p_finalize boolean, p_requested_actual bigint, p_bypass boolean
) RETURNS TABLE (entry billing_billingentry, available bigint, held bigint, version bigint, daily_cap bigint,
                 refill_threshold bigint, day_spent bigint, day_held bigint, low_balance_first boolean)
LANGUAGE plpgsql AS $$
DECLARE
  e billing_billingentry;
  acct record;
  refund bigint;
  allowed bigint;
  counted record;
  journal bigint;
BEGIN
  UPDATE billing_billingentry b SET state = 'COMMITTED', updated_at = p_now, actual_cost = p_actual
  WHERE b.id = p_id AND b.state = 'RESERVE_HELD' AND (p_account IS NULL OR b.account_id = p_account)
    AND b.expires_at > p_now
  RETURNING b.* INTO e;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'cas_miss';
  END IF;
  refund := e.estimated_cost - p_actual;  -- negative when overcapturing
  UPDATE billing_account a SET available = a.available + refund, held = a.held - e.estimated_cost,
    version = a.version + 1
  WHERE a.id = e.account_id AND a.kind <> 'system'
    AND (refund >= 0 OR (a.allow_overcapture AND a.available + a.credit_limit + refund >= 0))
  RETURNING a.available, a.held, a.version, a.daily_cap, a.refill_threshold INTO acct;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'commit_refused';
  END IF;
  IF e.cap_day IS NOT NULL AND acct.daily_cap IS NOT NULL THEN
    IF p_actual > e.estimated_cost THEN
      -- What this entry may charge in total: its hold plus what is still free today.
      SELECT GREATEST(e.estimated_cost, acct.daily_cap - d.spent - (d.held - e.estimated_cost)) INTO allowed
      FROM billing_dailyspend d WHERE d.account_id = e.account_id AND d.day = e.cap_day FOR UPDATE;
      allowed := COALESCE(allowed, GREATEST(e.estimated_cost, acct.daily_cap + e.estimated_cost));
      IF p_actual > allowed THEN
        RAISE EXCEPTION 'cap_overshoot' USING DETAIL = allowed::text;
      END IF;
    END IF;
    UPDATE billing_dailyspend d SET held = d.held - e.estimated_cost, spent = d.spent + p_actual
    WHERE d.account_id = e.account_id AND d.day = e.cap_day RETURNING d.spent, d.held INTO counted;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'daily spend row missing for account % on %', e.account_id, e.cap_day;
    END IF;
    day_spent := counted.spent; day_held := counted.held;
    IF counted.spent > acct.daily_cap AND NOT p_bypass THEN
      RAISE EXCEPTION 'invariant_violation' USING DETAIL = 'budget_conservation';
    END IF;
  END IF;
  IF acct.held < 0 AND NOT p_bypass THEN
    RAISE EXCEPTION 'invariant_violation' USING DETAIL = 'reserve_within_allocation';
  END IF;
  INSERT INTO billing_journalentry (billing_entry_id, event_type, correlation_id, exchange_rate,
    rounding_direction, idempotency_key, created_at)
  VALUES (e.id, 'billing_commit', e.correlation_id, NULL, '', NULL, p_now) RETURNING id INTO journal;
  INSERT INTO billing_posting (journal_entry_id, account_id, bucket, delta, denomination)
  SELECT journal, leg.account_id, leg.bucket, leg.delta, 'micro_usd'
  FROM (VALUES (e.account_id, 'held', -e.estimated_cost), (p_revenue, 'available', p_actual),
               (e.account_id, 'available', refund)) AS leg (account_id, bucket, delta)
  WHERE leg.delta <> 0;
  PERFORM billing_audit_transition('billing_commit', e, 'RESERVE_HELD', p_now, '', NULL, NULL);
  IF p_requested_actual IS NOT NULL THEN
    PERFORM billing_audit_transition('billing_daily_cap_applied', e, 'RESERVE_HELD', p_now,
      'actual cost capped to the agent''s daily cap', p_actual, p_requested_actual);
  END IF;
  low_balance_first := false;
  IF acct.refill_threshold IS NOT NULL AND acct.available < acct.refill_threshold THEN
    INSERT INTO billing_dailyspend AS d (account_id, day, spent, held, low_balance_notified_at)
    VALUES (e.account_id, (p_now AT TIME ZONE 'UTC')::date, 0, 0, p_now)
    ON CONFLICT (account_id, day) DO UPDATE SET low_balance_notified_at = EXCLUDED.low_balance_notified_at
    WHERE d.low_balance_notified_at IS NULL;
    low_balance_first := FOUND;
  END IF;
  IF p_finalize THEN
    UPDATE billing_billingentry b SET state = 'FINALIZE_PENDING', updated_at = p_now, next_attempt_at = p_now
    WHERE b.id = e.id AND b.state = 'COMMITTED' RETURNING b.* INTO e;
    PERFORM billing_audit_transition('billing_finalize_pending', e, 'COMMITTED', p_now, '', NULL, NULL);
  END IF;
  entry := e; available := acct.available; held := acct.held; version := acct.version;
  daily_cap := acct.daily_cap; refill_threshold := acct.refill_threshold;
  RETURN NEXT;
END $$;
"""

RELEASE = """
CREATE OR REPLACE FUNCTION billing_entry_release(
  p_id varchar, p_account bigint, p_reason varchar, p_now timestamptz
) RETURNS TABLE (entry billing_billingentry, available bigint, held bigint, version bigint, daily_cap bigint,
                 refill_threshold bigint, day_spent bigint, day_held bigint)
LANGUAGE plpgsql AS $$
DECLARE
  e billing_billingentry;
  acct record;
  counted record;
  journal bigint;
BEGIN
  UPDATE billing_billingentry b SET state = 'RELEASED', updated_at = p_now, release_reason = p_reason
  WHERE b.id = p_id AND b.state = 'RESERVE_HELD' AND (p_account IS NULL OR b.account_id = p_account)
  RETURNING b.* INTO e;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'cas_miss';
  END IF;
  UPDATE billing_account a SET available = a.available + e.estimated_cost, held = a.held - e.estimated_cost,
    version = a.version + 1
  WHERE a.id = e.account_id AND a.kind <> 'system'
  RETURNING a.available, a.held, a.version, a.daily_cap, a.refill_threshold INTO acct;
  IF e.cap_day IS NOT NULL THEN
    UPDATE billing_dailyspend d SET held = d.held - e.estimated_cost
    WHERE d.account_id = e.account_id AND d.day = e.cap_day RETURNING d.spent, d.held INTO counted;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'daily spend row missing for account % on %', e.account_id, e.cap_day;
    END IF;
    day_spent := counted.spent; day_held := counted.held;
  END IF;
  INSERT INTO billing_journalentry (billing_entry_id, event_type, correlation_id, exchange_rate,
    rounding_direction, idempotency_key, created_at)
  VALUES (e.id, 'billing_release', e.correlation_id, NULL, '', NULL, p_now) RETURNING id INTO journal;
  INSERT INTO billing_posting (journal_entry_id, account_id, bucket, delta, denomination)
  VALUES (journal, e.account_id, 'held', -e.estimated_cost, 'micro_usd'),
         (journal, e.account_id, 'available', e.estimated_cost, 'micro_usd');
  PERFORM billing_audit_transition('billing_release', e, 'RESERVE_HELD', p_now, p_reason, NULL, NULL);
  entry := e; available := acct.available; held := acct.held; version := acct.version;
  daily_cap := acct.daily_cap; refill_threshold := acct.refill_threshold;
  RETURN NEXT;
END $$;
"""

DROP = """
DROP FUNCTION IF EXISTS billing_entry_release(varchar, bigint, varchar, timestamptz);
DROP FUNCTION IF EXISTS billing_entry_commit(varchar, bigint, bigint, timestamptz, bigint, boolean, bigint, boolean);
DROP FUNCTION IF EXISTS billing_entry_reserve(varchar, bigint, varchar, bigint, bigint, numeric, timestamptz,
  timestamptz, varchar, bigint, text, varchar, boolean);
DROP FUNCTION IF EXISTS billing_audit_transition(varchar, billing_billingentry, varchar, timestamptz, text, bigint,
  bigint);
DROP FUNCTION IF EXISTS finn_crc32(text);
"""


class Migration(migrations.Migration):
    dependencies = [("billing", "0010_finance_permissions"), ("finn", "0008_feature_flags_allowlist")]

    operations = [migrations.RunSQL(CRC32 + AUDIT + RESERVE + COMMIT + RELEASE, DROP)]
