/** Routes that read clusters and plan migrations from intents: rebalance, reshard, drain, fix. */

import { type Static, type TSchema, Type } from '@fastify/type-provider-typebox';
import type { FastifyRequest } from 'fastify';
import type { ClusterAdapter } from '../../shared/cluster/adapter.js';
import { checkEngine, type MasterFacts, repairEngine } from '../../shared/domain/engine-choice.js';
import { EngineChoice, type MigrationEngine } from '../../shared/domain/migration.js';
import type { ClusterSnapshot, SlotMove } from '../../shared/domain/plan.js';
import {
  type FixInput,
  type FixNodeView,
  fixViewFrom,
  planDrain,
  planFix,
  planRebalance,
  planReshard,
} from '../../shared/domain/planners/index.js';
import { SLOT_COUNT } from '../../shared/domain/slots.js';
import { type ClusterNode, NodeRole, nodeAddress, slotCount } from '../../shared/domain/topology.js';
import { ErrorCode, SlotfleetError } from '../../shared/errors.js';
import { groupMoves } from '../../shared/queue/migration-store.js';
import { ConflictKind, conflictError } from '../conflicts.js';
import { createIdempotently, type MigrationRequest, preflight } from '../create-migration.js';
import type { AppDeps, TypedApp } from '../deps.js';
import { engineOrRefuse, liveMasters, readMasterFacts } from '../engine-check.js';
import { errorResponses } from '../http-errors.js';
import { clusterAdapter, idempotencyKey } from '../route-helpers.js';
import {
  ClusterDetail,
  ClusterParams,
  ClusterSummary,
  DrainBody,
  FixBody,
  IdempotencyHeaders,
  MAX_WEIGHT,
  MIN_WEIGHT,
  MigrationCreated,
  PlanPreview,
  RebalanceBody,
  ReshardBody,
} from '../schemas.js';

export function registerClusterRoutes(app: TypedApp, deps: AppDeps): void {
  app.get(
    '/v1/clusters',
    {
      schema: {
        description: 'The configured clusters (addresses only; credentials are never shown).',
        response: { 200: Type.Array(ClusterSummary), ...errorResponses(401) },
      },
    },
    async () =>
      Object.entries(deps.config.clusters).map(([name, endpoint]) => ({
        name,
        seed: `${endpoint.host}:${endpoint.port}`,
      })),
  );

  app.get(
    '/v1/clusters/:cluster',
    {
      schema: {
        description: 'Masters with their replicas, slot and key counts, open slots and failed nodes.',
        params: ClusterParams,
        response: { 200: ClusterDetail, ...errorResponses(401, 404, 503) },
      },
    },
    async (request) => {
      const { cluster } = request.params;
      const adapter = clusterAdapter(deps, cluster);
      const snapshot = await adapter.snapshot();
      const states = await adapter.clusterStates().catch(() => new Map<string, string>());
      const keys = await adapter.dbSizes(snapshot.nodes.filter((node) => !node.failed));
      const live = snapshot.nodes.filter((node) => !node.failed);
      const keysOf = new Map(live.map((node, index) => [node.id, keys[index] ?? null]));
      const describe = (node: (typeof snapshot.nodes)[number]) => ({
        id: node.id,
        address: nodeAddress(node),
        role: node.role,
        masterId: node.masterId,
        flags: [...node.flags],
        failed: node.failed,
        slots: slotCount(node),
        keys: keysOf.get(node.id) ?? null,
      });
      const masters = snapshot.nodes.filter((node) => node.role === NodeRole.Master);
      return {
        name: cluster,
        state:
          [...states.values()].every((state) => state === 'ok') && states.size > 0
            ? 'ok'
            : ([...states.values()].find((state) => state !== 'ok') ?? 'unknown'),
        slotsCovered: snapshot.owners.filter((owner) => owner !== null).length,
        masters: masters.map((master) => ({
          ...describe(master),
          replicas: snapshot.nodes.filter((node) => node.masterId === master.id).map(describe),
        })),
        openSlots: snapshot.openSlots.map((entry) => ({ ...entry })),
        failedNodes: snapshot.nodes.filter((node) => node.failed).map(describe),
      };
    },
  );

  app.post(
    '/v1/clusters/:cluster/rebalance',
    planRouteOptions(
      RebalanceBody,
      'Even out slots (by: "slots", redis-cli semantics) or keys (by: "keys") across masters by weight. ' +
        `threshold (percent, default 2) below which nothing moves; useEmptyMasters lets empty masters take slots. ${DRY_RUN}`,
    ),
    async (request, reply) => {
      const answer = await planOrStart(deps, request, {
        kind: 'rebalance',
        cluster: request.params.cluster,
        body: request.body,
        plan: (adapter, snapshot) => rebalancePlan(adapter, snapshot, request.body),
      });
      return answer.dryRun ? reply.status(200).send(answer.preview) : reply.status(202).send(answer.created);
    },
  );

  app.post(
    '/v1/clusters/:cluster/reshard',
    planRouteOptions(
      ReshardBody,
      `Move N slots (shared among the sources by what each holds) or explicit ranges from sources to one target. ${DRY_RUN}`,
    ),
    async (request, reply) => {
      const answer = await planOrStart(deps, request, {
        kind: 'reshard',
        cluster: request.params.cluster,
        body: request.body,
        plan: async (_adapter, snapshot) => reshardPlan(snapshot, request.body),
      });
      return answer.dryRun ? reply.status(200).send(answer.preview) : reply.status(202).send(answer.created);
    },
  );

  app.post(
    '/v1/clusters/:cluster/drain',
    planRouteOptions(
      DrainBody,
      `Move every slot of a master to the other masters by weight, so it can be removed. ${DRY_RUN}`,
    ),
    async (request, reply) => {
      const { node, weights } = request.body;
      const answer = await planOrStart(deps, request, {
        kind: 'drain',
        cluster: request.params.cluster,
        body: request.body,
        plan: async (_adapter, snapshot) =>
          planDrain(snapshot, { node, ...(weights ? { weights: checkedWeights(weights) } : {}) }),
      });
      return answer.dryRun ? reply.status(200).send(answer.preview) : reply.status(202).send(answer.created);
    },
  );

  app.post(
    '/v1/clusters/:cluster/fix',
    planRouteOptions(
      FixBody,
      'Repair open slots (IMPORTING/MIGRATING left by an interrupted move), uncovered slots and keys on a non-owner, ' +
        "covering redis-cli's clusterManagerFixOpenSlot cases. What cannot be repaired safely is reported, not guessed.",
    ),
    async (request, reply) => {
      const { cluster } = request.params;
      const adapter = clusterAdapter(deps, cluster);
      const choice = request.body.engine ?? EngineChoice.Auto;
      // Refused before anything is read: fix never runs atomic.
      const forRepairs = { repairs: true };
      const engine = engineOrRefuse(repairEngine(choice), forRepairs);
      const { input, masters } = await fixInputOf(adapter);
      const fixPlan = planFix(input);
      const moves: SlotMove[] = fixPlan.repairs.map((repair) => ({
        slot: repair.slot,
        source: repair.source,
        target: repair.target,
        repair: {
          kind: repair.kind,
          keysFrom: [...repair.keysFrom],
          closeOn: [...repair.closeOn],
          reason: repair.reason,
        },
      }));
      const unrepairable = fixPlan.unrepairable.map((entry) => ({ ...entry }));
      if (moves.length > 0) {
        // Its repairs must not touch slots a server task holds, nor leave keys of other databases behind.
        engineOrRefuse(
          checkEngine({ choice, repairsByHand: true, masters, moves, openSlots: [] }),
          forRepairs,
        );
      }
      if (request.body.dryRun === true || moves.length === 0) {
        return reply.status(200).send({ ...(await preview(adapter, cluster, moves, engine)), unrepairable });
      }
      const { dryRun: _dryRun, ...body } = request.body;
      const created = await createIdempotently(
        deps,
        { cluster, kind: 'fix', body, idempotencyKey: idempotencyKey(request) },
        async () => ({ moves, engine }),
      );
      request.log.info(
        { migrationId: created.id, cluster, repairs: created.slots, unrepairable: unrepairable.length },
        'fix enqueued',
      );
      return reply
        .status(202)
        .send({ id: created.id, cluster, engine: created.engine, slots: created.slots, plan: created.plan });
    },
  );
}

/** What a planning route reads of its body besides its own fields. */
interface PlanRequestBody extends MigrationRequest {
  readonly dryRun?: boolean;
}

/** Ends the description of the intent routes (fix says what its dry run does in its own words). */
const DRY_RUN = 'dryRun returns the plan and enqueues nothing.';

/** Schema of a planning route: its body, and the answers every planning route gives (a plan or a migration). */
function planRouteOptions<Body extends TSchema>(body: Body, description: string) {
  return {
    schema: {
      description,
      params: ClusterParams,
      headers: IdempotencyHeaders,
      body,
      response: {
        200: PlanPreview,
        202: MigrationCreated,
        ...errorResponses(400, 401, 404, 409, 422, 503),
      },
    },
  };
}

/**
 * Plans on a fresh snapshot after the pre-flight checks, then answers the plan (dryRun) or starts
 * the migration. An Idempotency-Key request that repeats an earlier one does not plan again.
 */
async function planOrStart(
  deps: AppDeps,
  request: FastifyRequest,
  route: {
    readonly kind: string;
    readonly cluster: string;
    readonly body: PlanRequestBody;
    readonly plan: (adapter: ClusterAdapter, snapshot: ClusterSnapshot) => Promise<readonly SlotMove[]>;
  },
) {
  const { kind, cluster, body } = route;
  const adapter = clusterAdapter(deps, cluster);
  const planNow = async () => {
    const snapshot = await adapter.snapshot();
    const moves = await route.plan(adapter, snapshot);
    const engine = await preflight(adapter, snapshot, moves, body.engine ?? EngineChoice.Auto);
    return { moves, engine };
  };
  if (body.dryRun === true) {
    const { moves, engine } = await planNow();
    return { dryRun: true, preview: await preview(adapter, cluster, moves, engine) } as const;
  }
  // Without dryRun, the same request with dryRun: false or without it hashes alike for the Idempotency-Key.
  const { dryRun: _dryRun, ...requestBody } = body;
  const created = await createIdempotently(
    deps,
    { cluster, kind, body: requestBody, idempotencyKey: idempotencyKey(request) },
    async () => {
      const planned = await planNow();
      if (planned.moves.length === 0) throw conflictError({ kind: ConflictKind.NothingToDo, action: kind });
      return planned;
    },
  );
  request.log.info({ migrationId: created.id, cluster, kind, slots: created.slots }, 'migration enqueued');
  return {
    dryRun: false,
    created: {
      id: created.id,
      cluster,
      engine: created.engine,
      slots: created.slots,
      plan: created.plan,
      ...(created.reused ? { reused: true } : {}),
    },
  } as const;
}

async function rebalancePlan(
  adapter: ClusterAdapter,
  snapshot: ClusterSnapshot,
  body: Static<typeof RebalanceBody>,
): Promise<SlotMove[]> {
  const by = body.by ?? 'slots';
  const keysPerSlot = by === 'keys' ? await keysPerSlotOf(adapter, snapshot) : undefined;
  return planRebalance(snapshot, {
    ...(body.weights ? { weights: checkedWeights(body.weights) } : {}),
    ...(body.threshold !== undefined ? { threshold: body.threshold } : {}),
    ...(body.useEmptyMasters !== undefined ? { useEmptyMasters: body.useEmptyMasters } : {}),
    by,
    ...(keysPerSlot ? { keysPerSlot } : {}),
  });
}

function reshardPlan(snapshot: ClusterSnapshot, body: Static<typeof ReshardBody>): SlotMove[] {
  if ((body.slots === undefined) === (body.ranges === undefined)) {
    throw new SlotfleetError(ErrorCode.InvalidRequest, 'give exactly one of slots (a count) or ranges');
  }
  return planReshard(snapshot, {
    from: body.from,
    to: body.to,
    ...(body.slots !== undefined ? { slots: body.slots } : {}),
    ...(body.ranges !== undefined ? { ranges: body.ranges } : {}),
  });
}

/**
 * Weights the planners can compute with: 0 (empty the node) or from MIN_WEIGHT up (the schema caps
 * them). planRebalance works in single precision, as redis-cli does: there, weights below about 1e-45
 * are 0, and a total of 0 left its balancing loop spinning forever on NaN.
 */
function checkedWeights(weights: Readonly<Record<string, number>>): Readonly<Record<string, number>> {
  for (const [reference, weight] of Object.entries(weights)) {
    if (weight !== 0 && weight < MIN_WEIGHT) {
      throw new SlotfleetError(
        ErrorCode.InvalidRequest,
        `weights["${reference}"] is ${weight}: a weight is 0 (empty the node) or from ${MIN_WEIGHT} to ${MAX_WEIGHT}`,
      );
    }
  }
  return weights;
}

/** The plan grouped by source -> target with key counts, for dry runs. */
async function preview(
  adapter: ClusterAdapter,
  cluster: string,
  moves: readonly SlotMove[],
  engine: MigrationEngine,
) {
  const groups = groupMoves(moves);
  let keys = 0;
  const plan = await Promise.all(
    groups.map(async (group) => {
      const slots = moves.filter(
        (move) => move.source.id === group.sourceId && move.target.id === group.targetId,
      );
      const counts = await adapter.countKeysInSlots(
        slots[0]!.source,
        slots.map((move) => move.slot),
      );
      const groupKeys = counts.reduce((sum, count) => sum + count, 0);
      keys += groupKeys;
      return { ...group, keys: groupKeys };
    }),
  );
  return { dryRun: true as const, cluster, engine, slots: moves.length, keys, plan };
}

/** COUNTKEYSINSLOT of every slot, asked of its owner. */
async function keysPerSlotOf(adapter: ClusterAdapter, snapshot: ClusterSnapshot): Promise<number[]> {
  const counts = new Array<number>(SLOT_COUNT).fill(0);
  const byOwner = new Map<string, number[]>();
  snapshot.owners.forEach((owner, slot) => {
    if (owner) byOwner.set(owner, [...(byOwner.get(owner) ?? []), slot]);
  });
  await Promise.all(
    [...byOwner].map(async ([ownerId, slots]) => {
      const node = snapshot.nodes.find((candidate) => candidate.id === ownerId);
      if (!node || node.failed) return;
      const owned = await adapter.countKeysInSlots(node, slots);
      slots.forEach((slot, index) => {
        counts[slot] = owned[index] ?? 0;
      });
    }),
  );
  return counts;
}

/**
 * Every master's own view and the slots in which it holds keys: what planFix needs. Alongside, what
 * the engine check needs of each master (read once).
 */
async function fixInputOf(adapter: ClusterAdapter): Promise<{ input: FixInput; masters: MasterFacts[] }> {
  const seed = await adapter.readAnyView();
  const masters = seed.nodes.filter((node) => node.role === NodeRole.Master && !node.failed);
  const allSlots = Array.from({ length: SLOT_COUNT }, (_, slot) => slot);
  const [views, facts] = await Promise.all([
    fixViewsOf(adapter, masters, allSlots),
    readMasterFacts(adapter, liveMasters(seed.nodes)),
  ]);
  return { input: { nodes: seed.nodes, views }, masters: facts };
}

function fixViewsOf(
  adapter: ClusterAdapter,
  masters: readonly ClusterNode[],
  allSlots: readonly number[],
): Promise<FixNodeView[]> {
  return Promise.all(
    masters.map(async (master) => {
      const view = await adapter.readView(master);
      const counts = await adapter.countKeysInSlots(master, allSlots);
      const keysInSlot = new Map<number, number>();
      counts.forEach((count, slot) => {
        if (count > 0) keysInSlot.set(slot, count);
      });
      return fixViewFrom(view, keysInSlot.keys(), keysInSlot);
    }),
  );
}
