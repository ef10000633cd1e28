-- The agency's books (issue #12): one row per outcome event the worker published, the reference data
-- the statistics group by, and the records service's consumer offsets, written in the same
-- transaction as the rows (exactly once into the database). Amounts are integer fen (bigint), ratios
-- integer basis points; `*_on` dates are China dates (UTC+08:00). Every event row carries `format`
-- (the row layout's version, 1 here); `schema_migrations` holds the database's version.

CREATE TABLE consumer_offsets (
    consumer_group text NOT NULL,
    topic text NOT NULL,
    partition integer NOT NULL,
    next_offset bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

-- claim.settled (claims.settled)
CREATE TABLE settlements (
    event_id text PRIMARY KEY,
    format smallint NOT NULL,
    claim_id text NOT NULL,
    member_id text NOT NULL,
    city text NOT NULL,
    policy_version text NOT NULL,
    facility_id text NOT NULL,
    prescribing_facility_id text,
    service_date date NOT NULL,
    settled_at timestamptz NOT NULL,
    settled_on date NOT NULL,
    channel text NOT NULL,
    fund_payee text NOT NULL,
    treatment text NOT NULL,
    band text,
    total_fen bigint NOT NULL,
    full_self_pay_fen bigint NOT NULL,
    pre_self_pay_fen bigint NOT NULL,
    eligible_fen bigint NOT NULL,
    deductible_fen bigint NOT NULL,
    fund_pay_fen bigint NOT NULL,
    member_share_fen bigint NOT NULL,
    account_pay_fen bigint NOT NULL,
    cash_pay_fen bigint NOT NULL,
    examination_fen bigint NOT NULL,
    sole_category text,
    category_totals jsonb NOT NULL,
    fund_limits text[] NOT NULL,
    fund_exclusions text[] NOT NULL,
    source_partition integer NOT NULL,
    source_offset bigint NOT NULL
);
CREATE INDEX settlements_facility_day ON settlements (facility_id, settled_on);
CREATE INDEX settlements_day ON settlements (settled_on);
CREATE INDEX settlements_claim ON settlements (claim_id);

-- claim.reversed (claims.settled): the amounts it takes back are the settlement's (joined by claim_id)
CREATE TABLE reversals (
    event_id text PRIMARY KEY,
    format smallint NOT NULL,
    claim_id text NOT NULL,
    member_id text NOT NULL,
    facility_id text,
    reversed_at timestamptz NOT NULL,
    reversed_on date NOT NULL,
    fund_pay_fen bigint NOT NULL,
    account_pay_fen bigint NOT NULL,
    source_partition integer NOT NULL,
    source_offset bigint NOT NULL
);
CREATE INDEX reversals_facility_day ON reversals (facility_id, reversed_on);
CREATE INDEX reversals_day ON reversals (reversed_on);
CREATE INDEX reversals_claim ON reversals (claim_id);

-- claim.rejected (claims.rejected)
CREATE TABLE rejections (
    event_id text PRIMARY KEY,
    format smallint NOT NULL,
    request_type text NOT NULL,
    claim_id text NOT NULL,
    member_id text,
    rejected_at timestamptz NOT NULL,
    rejected_on date NOT NULL,
    codes text[] NOT NULL,
    source_partition integer NOT NULL,
    source_offset bigint NOT NULL
);
CREATE INDEX rejections_day ON rejections (rejected_on);

-- account.credited / debited / closed / request_rejected (accounts.ledger). Ledger events carry no
-- time of their own: `booked_on` is the China date of the Kafka record's timestamp (when the worker
-- published it).
CREATE TABLE ledger_events (
    event_id text PRIMARY KEY,
    format smallint NOT NULL,
    type text NOT NULL,
    request_id text NOT NULL,
    member_id text,
    cause text,
    purpose text,
    disposition text,
    period text,
    beneficiary_member_id text,
    amount_fen bigint,
    balance_after_fen bigint,
    codes text[],
    booked_at timestamptz NOT NULL,
    booked_on date NOT NULL,
    source_partition integer NOT NULL,
    source_offset bigint NOT NULL
);
CREATE INDEX ledger_events_day ON ledger_events (booked_on);

-- Reference data (compacted topics; the last record per key wins)
CREATE TABLE members (
    member_id text PRIMARY KEY,
    format smallint NOT NULL,
    city text NOT NULL
);

CREATE TABLE facilities (
    facility_id text PRIMARY KEY,
    format smallint NOT NULL,
    city text NOT NULL,
    kind text NOT NULL,
    level smallint NOT NULL,
    community boolean NOT NULL
);

-- A record the service could not read (never expected: the worker writes these topics). Kept, with
-- its position, instead of stopping the service or dropping it silently.
CREATE TABLE unreadable_events (
    topic text NOT NULL,
    partition integer NOT NULL,
    "offset" bigint NOT NULL,
    error text NOT NULL,
    payload bytea,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, "offset")
);

-- Early-warning alerts found by `python -m worker alerts`: the event published on monitoring.alerts,
-- kept so that a re-run publishes nothing new (`published` is set once Kafka acknowledged it).
CREATE TABLE alerts (
    event_id text PRIMARY KEY,
    format smallint NOT NULL,
    month date NOT NULL,
    facility_id text NOT NULL,
    indicator text NOT NULL,
    event jsonb NOT NULL,
    published boolean NOT NULL DEFAULT false,
    found_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alerts_month ON alerts (month);

-- ---------------------------------------------------------------- views (documented in the README)

-- Every money movement of a claim: +1 for its settlement on its settlement date, −1 for its reversal
-- on its reversal date (taking back the settlement's amounts). Books by date are sums of this.
CREATE VIEW claim_movements AS
SELECT s.event_id, 'settled'::text AS movement, 1 AS sign, s.settled_on AS booked_on,
       date_trunc('month', s.settled_on)::date AS month, s.claim_id, s.member_id, s.city,
       s.facility_id, coalesce(f.kind, 'unknown') AS facility_kind, s.channel, s.fund_payee,
       s.treatment, coalesce(s.band, 'none') AS band, s.sole_category,
       s.total_fen, s.full_self_pay_fen, s.examination_fen, s.fund_pay_fen, s.account_pay_fen,
       s.cash_pay_fen
FROM settlements s
LEFT JOIN facilities f ON f.facility_id = s.facility_id
UNION ALL
SELECT r.event_id, 'reversed', -1, r.reversed_on, date_trunc('month', r.reversed_on)::date,
       r.claim_id, r.member_id, s.city, coalesce(r.facility_id, s.facility_id),
       coalesce(f.kind, 'unknown'), s.channel, s.fund_payee, s.treatment, coalesce(s.band, 'none'),
       s.sole_category,
       -s.total_fen, -s.full_self_pay_fen, -s.examination_fen, -r.fund_pay_fen, -r.account_pay_fen,
       -s.cash_pay_fen
FROM reversals r
JOIN settlements s ON s.claim_id = r.claim_id
LEFT JOIN facilities f ON f.facility_id = s.facility_id;

-- Pooling-fund spending per month and city, by treatment class, band, channel and facility kind
-- (settlements of the month minus reversals of the month).
CREATE VIEW fund_spending_monthly AS
SELECT month, city, treatment, band, channel, facility_kind,
       count(*) FILTER (WHERE sign = 1) AS settlements,
       count(*) FILTER (WHERE sign = -1) AS reversals,
       sum(total_fen)::bigint AS total_fen,
       sum(fund_pay_fen)::bigint AS fund_pay_fen,
       sum(account_pay_fen)::bigint AS account_pay_fen,
       sum(cash_pay_fen)::bigint AS cash_pay_fen
FROM claim_movements
GROUP BY month, city, treatment, band, channel, facility_kind;

-- Pooling-fund spending per day and city (the report's daily chart).
CREATE VIEW fund_spending_daily AS
SELECT booked_on AS day, city, sum(fund_pay_fen)::bigint AS fund_pay_fen,
       sum(total_fen)::bigint AS total_fen, count(*) FILTER (WHERE sign = 1) AS settlements
FROM claim_movements
GROUP BY booked_on, city;

-- Personal-account payments in claims per month and city, by facility kind and category. An account
-- payment is not split by line in the events, so a claim counts under its one category, or under
-- 'mixed' when its lines are of several.
CREATE VIEW account_claim_payments_monthly AS
SELECT month, city, facility_kind, coalesce(sole_category, 'mixed') AS category,
       count(*) FILTER (WHERE sign = 1 AND account_pay_fen > 0) AS claims_paid_by_account,
       sum(account_pay_fen)::bigint AS account_pay_fen
FROM claim_movements
GROUP BY month, city, facility_kind, coalesce(sole_category, 'mixed');

-- Personal-account money flows per month and city (the member's insured city; 'unknown' before the
-- profile was read): credits by cause, debits by purpose, closings by disposition, and payments in
-- claims. `pooling_fund` says where the pooling fund is the other side: retiree credits and health
-- incentives come from it (Nanchang art. 6), balances of closed accounts may go to it.
CREATE VIEW account_flows_monthly AS
SELECT date_trunc('month', l.booked_on)::date AS month, coalesce(m.city, 'unknown') AS city,
       CASE l.type WHEN 'account.credited' THEN 'credit' WHEN 'account.debited' THEN 'debit'
                   ELSE 'closing' END AS flow,
       coalesce(l.cause, l.purpose, l.disposition) AS reason,
       CASE WHEN l.cause IN ('retiree', 'incentive') THEN 'from_pooling_fund'
            WHEN l.disposition = 'to_pooling_fund' THEN 'to_pooling_fund'
            ELSE 'none' END AS pooling_fund,
       count(*) AS events, sum(l.amount_fen)::bigint AS amount_fen
FROM ledger_events l
LEFT JOIN members m ON m.member_id = l.member_id
WHERE l.type IN ('account.credited', 'account.debited', 'account.closed')
GROUP BY 1, 2, 3, 4, 5
UNION ALL
SELECT month, city, 'claim_payment', facility_kind, 'none', count(*) FILTER (WHERE sign = 1),
       sum(account_pay_fen)::bigint
FROM claim_movements
GROUP BY month, city, facility_kind;

-- Early-warning indicators per facility and month of settlement, over the claims settled in the month
-- and not reversed: visits, total, average cost per visit (次均费用, floor of fen), self-pay share
-- (自费 = full self-pay / total) and examination share (检查 / total) in basis points (truncated),
-- the facility's most frequent band, the median average cost of its peers (same city, facility kind
-- and band; the lower median), and the growth of total cost over the previous month.
CREATE VIEW facility_month_totals AS
SELECT s.facility_id, s.city, coalesce(f.kind, 'unknown') AS facility_kind,
       date_trunc('month', s.settled_on)::date AS month,
       mode() WITHIN GROUP (ORDER BY coalesce(s.band, 'none')) AS band,
       count(*) AS visits, sum(s.total_fen)::bigint AS total_fen,
       sum(s.full_self_pay_fen)::bigint AS full_self_pay_fen,
       sum(s.examination_fen)::bigint AS examination_fen,
       sum(s.fund_pay_fen)::bigint AS fund_pay_fen
FROM settlements s
LEFT JOIN facilities f ON f.facility_id = s.facility_id
WHERE NOT EXISTS (SELECT 1 FROM reversals r WHERE r.claim_id = s.claim_id)
GROUP BY s.facility_id, s.city, coalesce(f.kind, 'unknown'), date_trunc('month', s.settled_on);

CREATE VIEW facility_month_indicators AS
WITH t AS (
    SELECT *, CASE WHEN visits > 0 THEN total_fen / visits END AS avg_cost_fen FROM facility_month_totals
), peers AS (
    SELECT city, facility_kind, band, month, count(*) AS peers,
           percentile_disc(0.5) WITHIN GROUP (ORDER BY avg_cost_fen) AS peer_median_avg_cost_fen
    FROM t GROUP BY city, facility_kind, band, month
)
SELECT t.facility_id, t.city, t.facility_kind, t.band, t.month, t.visits, t.total_fen,
       t.fund_pay_fen, t.avg_cost_fen, p.peers, p.peer_median_avg_cost_fen,
       CASE WHEN p.peer_median_avg_cost_fen > 0
            THEN t.avg_cost_fen * 10000 / p.peer_median_avg_cost_fen END AS avg_cost_vs_peers_bp,
       CASE WHEN t.total_fen > 0 THEN t.full_self_pay_fen * 10000 / t.total_fen END AS self_pay_share_bp,
       CASE WHEN t.total_fen > 0 THEN t.examination_fen * 10000 / t.total_fen END AS examination_share_bp,
       prev.total_fen AS previous_total_fen,
       CASE WHEN prev.total_fen > 0
            THEN (t.total_fen - prev.total_fen) * 10000 / prev.total_fen END AS cost_growth_bp
FROM t
JOIN peers p ON p.city = t.city AND p.facility_kind = t.facility_kind AND p.band = t.band
            AND p.month = t.month
LEFT JOIN t prev ON prev.facility_id = t.facility_id
                AND prev.month = (t.month - interval '1 month')::date;
