export {
  type FailoverOptions,
  SandboxCluster,
  type SandboxClusterOptions,
  type SandboxNode,
  SLOTFLEET_ACL_RULES,
  SLOTFLEET_ATOMIC_ACL_RULES,
} from './cluster.js';
export { type ClusterNodeEntry, parseClusterNodes, SLOT_COUNT, slotOwners } from './cluster-nodes.js';
export { type ControlRedisOptions, startControlRedis } from './control.js';
export {
  type ClusterTarget,
  countKeys,
  createManifest,
  type DatasetManifest,
  type DatasetTypes,
  datasetKey,
  type ExpectedKey,
  type ExpectedValue,
  expectedKey,
  expireAtFor,
  type KeyType,
  keyTypeAt,
  MIXED_KEY_TYPES,
  type NodeTarget,
  type SeedOptions,
  seedDataset,
  type VerifyOptions,
  type VerifyResult,
  valueFor,
  verifyDataset,
} from './dataset.js';
export {
  PROMETHEUS_INSTALL_HINT,
  type PrometheusBinaries,
  type PrometheusOptions,
  PrometheusProcess,
  type PromSeries,
  promtool,
  requirePrometheusBinaries,
} from './prometheus.js';
export {
  chooseServer,
  describeServer,
  type RedisBinaries,
  type RedisBinariesOptions,
  requireRedisBinaries,
  SERVER_CHOICE_VARIABLES,
  SERVER_INSTALL_COMMANDS,
  type ServerIdentity,
  type ServerName,
  serverChoiceFromEnvironment,
} from './redis-binaries.js';
export {
  type AclUser,
  RedisProcess,
  type RedisProcessOptions,
  redisUrl,
  SANDBOX_ACL_RULES,
  SANDBOX_HOST,
  withAdminConnection,
} from './redis-process.js';
export { SandboxSentinels, type SandboxSentinelsOptions, SENTINEL_INSTALL_HINT } from './sentinel.js';
export {
  createSandboxCertificates,
  OPENSSL_INSTALL_HINT,
  removeSandboxCertificates,
  type SandboxCertificates,
  type SandboxCertificatesOptions,
  sandboxTlsOptions,
} from './tls-certs.js';
export { spawnWorkerProcesses, stopProcesses, type WorkerProcessOptions } from './worker-processes.js';
