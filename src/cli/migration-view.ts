/**
 * The API's answers about migrations, as the command line, the demo and the tests read them. Each
 * type is derived from the TypeBox schema the API's route declares, so a field the API renames or
 * drops fails to compile here instead of reading as undefined.
 */
import type { Static } from 'typebox';
import type {
  Migration,
  MigrationCreated,
  MigrationList,
  MigrationSummary,
  PlanGroup,
  PlanPreview,
  ServerTask,
} from '../producer/schemas.js';

/**
 * GET /v1/migrations/:id: the whole record, with errors, rate, ETA and server tasks. serverTasks is
 * optional here: an API from before it leaves it out, and the CLI then prints no task.
 */
export type MigrationView = Omit<Static<typeof Migration>, 'serverTasks'> &
  Partial<Pick<Static<typeof Migration>, 'serverTasks'>>;

/** A server task of an atomic migration, as its source lists it. */
export type ServerTaskView = Static<typeof ServerTask>;

/** An item of GET /v1/migrations, and the answer of pause, resume, cancel and PATCH. */
export type MigrationSummaryView = Static<typeof MigrationSummary>;

/** GET /v1/migrations: the newest first, a page at a time. */
export type MigrationListView = Static<typeof MigrationList>;

/** One source and target of a plan, with the slots moving between them. */
export type PlanGroupView = Static<typeof PlanGroup>;

/** 202 from a rebalance, reshard, drain, fix or explicit moves: the migration is enqueued. */
export type MigrationCreatedView = Static<typeof MigrationCreated>;

/** 200 from the same routes with dryRun: the plan, nothing enqueued. */
export type PlanPreviewView = Static<typeof PlanPreview>;
