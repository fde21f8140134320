/**
 * The Promise facade of the audit tools, over an `Orchestrator`'s services: paged history as an async
 * iterable, replay, verification, rebuild, and export/import of histories as JSON Lines.
 *
 * Invariant: every method runs the Effect of the same name (src/audit/*.ts) through
 * `orchestrator.runEffect`, so both APIs behave alike and fail with the same typed errors.
 */
import { Stream } from "effect"
import type { Orchestrator, Services } from "../Orchestrator.ts"
import type { Envelope } from "../../streams/TaskEvent.ts"
import {
  exportHistories,
  type ExportOptions,
  exportRecords,
  type HistoryRecord,
  importHistories,
  type ImportOptions,
  type ImportReport
} from "./Export.ts"
import { historyStream, type HistoryReadOptions, type Replay, type ReplayOptions, replayTask } from "./History.ts"
import {
  rebuildProjections,
  type RebuildOptions,
  type RebuildReport,
  verifyAll,
  type VerifyAllOptions,
  type VerifyAllReport,
  verifyTask,
  type VerifyResult
} from "./Verify.ts"

export class Audit {
  readonly orchestrator: Orchestrator

  constructor(orchestrator: Orchestrator) {
    this.orchestrator = orchestrator
  }

  private iterate<A, E>(stream: Stream.Stream<A, E, Services>): AsyncIterable<A> {
    const orchestrator = this.orchestrator
    return {
      async *[Symbol.asyncIterator]() {
        yield* await orchestrator.runEffect(Stream.toAsyncIterableEffect(stream))
      }
    }
  }

  /** The task's history, oldest first, read `pageSize` entries at a time. */
  history(taskId: string, options?: HistoryReadOptions): AsyncIterable<Envelope> {
    return this.iterate(historyStream(taskId, options))
  }

  /** The state after every event (and at `upTo`), with the conversation when the payload has one. */
  replayTask(taskId: string, options?: ReplayOptions): Promise<Replay> {
    return this.orchestrator.runEffect(replayTask(taskId, options))
  }

  /** The live projection of one task compared with the fold of its history. */
  verifyTask(taskId: string): Promise<VerifyResult> {
    return this.orchestrator.runEffect(verifyTask(taskId))
  }

  /** Every task of the status indexes verified. */
  verifyAll(options?: VerifyAllOptions): Promise<VerifyAllReport> {
    return this.orchestrator.runEffect(verifyAll(options))
  }

  /** Every history folded and compared; with `fix`, divergent projections rewritten. */
  rebuild(options?: RebuildOptions): Promise<RebuildReport> {
    return this.orchestrator.runEffect(rebuildProjections(options))
  }

  /** JSON Lines text chunks (concatenate them) of the histories in the window. */
  exportHistories(options?: ExportOptions): AsyncIterable<string> {
    return this.iterate(exportHistories(options))
  }

  /** The same selection as decoded records. */
  exportRecords(options?: ExportOptions): AsyncIterable<HistoryRecord> {
    return this.iterate(exportRecords(options))
  }

  /** Imports JSON Lines (one line per element) into this orchestrator's namespace, which must be empty. */
  importHistories(lines: AsyncIterable<string> | Iterable<string>, options?: ImportOptions): Promise<ImportReport> {
    const stream = Symbol.asyncIterator in lines
      ? Stream.fromAsyncIterable(lines as AsyncIterable<string>, (e) => e)
      : Stream.fromIterable(lines as Iterable<string>)
    return this.orchestrator.runEffect(importHistories(stream, options))
  }
}
