/**
 * Redis stream entry ids ("<ms>-<seq>"), compared as the numbers they are: text order is wrong as soon as
 * two ids' parts differ in length. "" (no id yet, e.g. a checkpoint never written) is below every id.
 */

/** Compares two stream ids; allocates nothing, as the metrics projector compares every entry it folds. */
export const compareIds = (a: string, b: string): number => {
  if (a === b) return 0
  if (a === "") return -1
  if (b === "") return 1
  const da = a.indexOf("-")
  const db = b.indexOf("-")
  const dm = Number(da < 0 ? a : a.slice(0, da)) - Number(db < 0 ? b : b.slice(0, db))
  if (dm !== 0) return Math.sign(dm)
  return Math.sign((da < 0 ? 0 : Number(a.slice(da + 1))) - (db < 0 ? 0 : Number(b.slice(db + 1))))
}
