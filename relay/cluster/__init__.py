"""Cluster mode: several relay replicas on PostgreSQL and an S3-compatible store.

Off unless the relay is given `--database-url`; then (docs/scale-out.md):

- `relay.cluster.blobs`: where files go (`--blob-url`): a shared folder or an S3 bucket,
  behind the same content-addressed interface as `relay.blobs.BlobStore`;
- `relay.cluster.schema`: the tables every replica shares;
- `relay.cluster.dispatcher`: the scheduler's core (fair queue, capability, fenced leases)
  as claims on those tables, so any replica may place any job;
- `relay.cluster.replicas`: replicas' heartbeats, their limits, the leader (an advisory
  lock) and the requeue of a dead replica's jobs;
- `relay.cluster.member`: the loops that run those for one relay process;
- `relay.cluster.fanout`: job events from one replica to the others (LISTEN/NOTIFY);
- `relay.cluster.database`: riding out PostgreSQL restarts (retry, then 503);
- `relay.cluster.contract`: the async `Dispatch` contract both dispatchers keep;
- `relay.cluster.credentials`: node tokens and API keys, so any replica admits any node
  and any key (`python -m relay tokens|keys ... --database-url`);
- `relay.cluster.records`, `relay.cluster.queue`: job records and the shared queue that
  each replica's job service claims from;
- `relay.cluster.gallery`: the public gallery every replica shares;
- `relay.cluster.service`: the job service of a replica; `relay.cluster.boot` starts it.

Imports of the engines' clients (asyncpg, botocore: the `cluster` extra) happen only when
cluster mode is used, so a single relay installs without them.
"""
