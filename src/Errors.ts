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
  }
}
