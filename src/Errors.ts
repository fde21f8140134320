/**
 * The typed errors of the public API. Each rejection of the state machine has one, with the same tag;
 * bad input and bad configuration have their own. HTTP statuses live only in `src/http/HttpError.ts`.
 */
import { Schema } from "effect"
import type { Rejection } from "../projections/TaskDecider.ts"
import { TaskStatus } from "../streams/TaskEvent.ts"

export class TaskNotFound extends Schema.TaggedError<TaskNotFound>()("TaskNotFound", {
  taskId: Schema.String
}) {
  override get message() {
    return `task ${this.taskId} not found`
  }
}

export class TaskAlreadyExists extends Schema.TaggedError<TaskAlreadyExists>()("TaskAlreadyExists", {
  taskId: Schema.String
}) {
  override get message() {
    return `task ${this.taskId} already exists`
  }
}

export class TaskAlreadyFinished extends Schema.TaggedError<TaskAlreadyFinished>()("TaskAlreadyFinished", {
  taskId: Schema.String,
  status: TaskStatus
}) {
  override get message() {
    return `task ${this.taskId} is already ${this.status}`
  }
}

/** A worker acted under a lease it no longer holds (its task was recovered, cancelled or finished). */
export class StaleLease extends Schema.TaggedError<StaleLease>()("StaleLease", {
  taskId: Schema.String,
  lease: Schema.Number,
  currentLease: Schema.Number,
  status: Schema.String
}) {
  override get message() {
    return `lease ${this.lease} of task ${this.taskId} is stale (task is ${this.status} under lease ${this.currentLease})`
  }
}

/** A maintenance command found nothing to do. */
export class NotDue extends Schema.TaggedError<NotDue>()("NotDue", {
  taskId: Schema.String,
  status: Schema.String
}) {
  override get message() {
    return `nothing to do for task ${this.taskId} (${this.status})`
  }
}

export class InvalidSteeringCount extends Schema.TaggedError<InvalidSteeringCount>()("InvalidSteeringCount", {
  taskId: Schema.String,
  pending: Schema.Number
}) {
  override get message() {
    return `task ${this.taskId} has ${this.pending} pending steering messages`
  }
}

/** A deferred result for an id the task is not waiting for (or a child end for a child it never spawned). */
export class ResultNotPending extends Schema.TaggedError<ResultNotPending>()("ResultNotPending", {
  taskId: Schema.String,
  resultId: Schema.String,
  status: Schema.String
}) {
  override get message() {
    return `task ${this.taskId} (${this.status}) is not waiting for result ${this.resultId}`
  }
}

/** A second delivery of the same result: each wait item takes exactly one. */
export class ResultAlreadyReceived extends Schema.TaggedError<ResultAlreadyReceived>()("ResultAlreadyReceived", {
  taskId: Schema.String,
  resultId: Schema.String
}) {
  override get message() {
    return `result ${this.resultId} of task ${this.taskId} was already delivered`
  }
}

/** The per-call token presented with a result is not the one the task recorded for it. */
export class InvalidResultToken extends Schema.TaggedError<InvalidResultToken>()("InvalidResultToken", {
  taskId: Schema.String,
  resultId: Schema.String
}) {
  override get message() {
    return `wrong token for result ${this.resultId} of task ${this.taskId}`
  }
}

/** A turn's wait that cannot be kept (no items, an id twice, a child item for no such child …). */
export class InvalidWait extends Schema.TaggedError<InvalidWait>()("InvalidWait", {
  taskId: Schema.String,
  id: Schema.String,
  reason: Schema.Literals(["empty", "duplicate", "notAChild", "isAChild"])
}) {
  override get message() {
    const what = {
      empty: "it waits for nothing",
      duplicate: `${this.id} is named twice`,
      notAChild: `${this.id} is not a child of the task whose end is still to come`,
      isAChild: `${this.id} is a child task, not a deferred result`
    }[this.reason]
    return `invalid wait of task ${this.taskId}: ${what}`
  }
}

export class BatchNotFound extends Schema.TaggedError<BatchNotFound>()("BatchNotFound", { batchId: Schema.String }) {
  override get message() {
    return `batch ${this.batchId} not found`
  }
}

export class BatchAlreadyExists extends Schema.TaggedError<BatchAlreadyExists>()("BatchAlreadyExists", { batchId: Schema.String }) {
  override get message() {
    return `batch ${this.batchId} already exists`
  }
}

/** A completed batch cannot be cancelled. */
export class BatchAlreadyFinished extends Schema.TaggedError<BatchAlreadyFinished>()("BatchAlreadyFinished", {
  batchId: Schema.String
}) {
  override get message() {
    return `batch ${this.batchId} is already completed`
  }
}

/** A task's end that its batch does not count: not in the batch, or counted already (the follow-up step ignores it). */
export class TaskNotCounted extends Schema.TaggedError<TaskNotCounted>()("TaskNotCounted", {
  batchId: Schema.String,
  taskId: Schema.String,
  reason: Schema.Literals(["notInBatch", "alreadyCounted"])
}) {
  override get message() {
    return `task ${this.taskId} is ${this.reason === "notInBatch" ? "not in" : "already counted by"} batch ${this.batchId}`
  }
}

export type BatchRejected = BatchNotFound | BatchAlreadyExists | BatchAlreadyFinished | TaskNotCounted

/** Input that does not fit its schema (task id, payload, messages, options). */
export class InvalidInput extends Schema.TaggedError<InvalidInput>()("InvalidInput", {
  message: Schema.String
}) {}

/** A configuration value out of range or of the wrong type. */
export class InvalidConfig extends Schema.TaggedError<InvalidConfig>()("InvalidConfig", {
  message: Schema.String
}) {}

export type TaskRejected =
  | TaskNotFound
  | TaskAlreadyExists
  | TaskAlreadyFinished
  | StaleLease
  | NotDue
  | InvalidSteeringCount
  | ResultNotPending
  | ResultAlreadyReceived
  | InvalidResultToken
  | InvalidWait

/** The typed error for a rejection of the state machine. */
export const rejectionError = (taskId: string, lease: number, r: Rejection): TaskRejected => {
  switch (r._tag) {
    case "TaskNotFound":
      return new TaskNotFound({ taskId })
    case "TaskAlreadyExists":
      return new TaskAlreadyExists({ taskId })
    case "TaskAlreadyFinished":
      return new TaskAlreadyFinished({ taskId, status: r.status })
    case "StaleLease":
      return new StaleLease({ taskId, lease, currentLease: r.currentLease, status: r.status })
    case "NotDue":
      return new NotDue({ taskId, status: r.status })
    case "InvalidSteeringCount":
      return new InvalidSteeringCount({ taskId, pending: r.pending })
    case "ResultNotPending":
      return new ResultNotPending({ taskId, resultId: r.id, status: r.status })
    case "ResultAlreadyReceived":
      return new ResultAlreadyReceived({ taskId, resultId: r.id })
    case "InvalidResultToken":
      return new InvalidResultToken({ taskId, resultId: r.id })
    case "InvalidWait":
      return new InvalidWait({ taskId, id: r.id, reason: r.reason })
  }
}
