/**
 * The public entry point of factorial-ts: the Promise API (Orchestrator, agents, config classes, errors)
 * and, for Effect users, the services and layers they compose.
 */
export { BaseAgent, childTaskId, Continue, defineAgent, Done, Wait } from "./Agent.ts"
export type { AgentOptions, ChildSpec, DeliveredResult, EnqueueTarget, RunnableAgent, Task, TurnContext, TurnFunction, TurnOutcome, WaitSpec } from "./Agent.ts"
export { backoffDelayMs, classifyFailure, FatalAgentError, TransientAgentError, TurnTimeout } from "./AgentErrors.ts"
export {
  AgentWorkerConfig,
  MaintenanceWorkerConfig,
  MetricsTimelineConfig,
  ObservabilityConfig,
  TaskTTLConfig
} from "./Config.ts"
export {
  BatchAlreadyExists,
  BatchAlreadyFinished,
  BatchNotFound,
  InvalidConfig,
  InvalidInput,
  InvalidResultToken,
  InvalidSteeringCount,
  InvalidWait,
  NotDue,
  ResultAlreadyReceived,
  ResultNotPending,
  StaleLease,
  TaskAlreadyExists,
  TaskAlreadyFinished,
  TaskNotFound
} from "./Errors.ts"
export { Orchestrator, orchestratorLayer, runRunners } from "./Orchestrator.ts"
export type { OrchestratorOptions, RunnerRegistration } from "./Orchestrator.ts"
export { TaskClient } from "./TaskClient.ts"
export type { BatchData, BatchOptions, EnqueueOptions } from "./TaskClient.ts"
export { BatchEnvelope, BatchEvent, BatchStatus } from "../streams/BatchEvent.ts"
export { decideBatch, evolveBatch } from "../projections/BatchDecider.ts"
export { TaskStore } from "./TaskStore.ts"
export type { TaskData } from "./TaskStore.ts"
export { ControlChannel } from "./ControlChannel.ts"
export { decide, evolve, fold } from "../projections/TaskDecider.ts"
export type { TaskCommand, TaskState } from "../projections/TaskDecider.ts"
export { RedisClient } from "../streams/RedisClient.ts"
export type { RedisOptions } from "../streams/RedisClient.ts"
export { CorruptEntry, RedisError } from "../streams/StreamError.ts"
export { Envelope, TaskEvent, TaskStatus, WaitItem, WaitResult } from "../streams/TaskEvent.ts"
export * from "./agent/index.ts"
export { Audit } from "./audit/Audit.ts"
export { liveEvents, liveEventStream } from "./LiveFeed.ts"
export type { LiveEmit, LiveEvent, LiveFilter, LiveItem, LiveItemOf, LiveOptions } from "./LiveFeed.ts"
export { defaultEmitLimits, EmittedEvent, makeEmitHub } from "./LiveEmit.ts"
export type { EmitHub, EmitLimits } from "./LiveEmit.ts"
