/**
 * The audit tools: history paging and replay, verification and rebuild of the task-status projection,
 * export and import of histories (docs/audit.md). Effect functions, plus the Promise facade `Audit`.
 * Invariant: this module only re-exports; it has no state of its own.
 */
export * from "./Audit.ts"
export * from "./Export.ts"
export * from "./History.ts"
export {
  allStatuses,
  canonical,
  compareStates,
  type Divergence,
  hashFieldsOf,
  indexedStatuses,
  project,
  projectAll,
  type Projection
} from "./Projection.ts"
export * from "./Verify.ts"
