import { describe, expect, it } from 'vitest';
import { HEAP_FLOOR_FLAG, withHeapFloor } from '../../src/process/heap-floor.js';

describe('the heap floor handed to workers', () => {
  it('is added to the flags node was started with', () => {
    expect(withHeapFloor([])).toEqual([HEAP_FLOOR_FLAG]);
    expect(withHeapFloor(['--enable-source-maps'])).toEqual(['--enable-source-maps', HEAP_FLOOR_FLAG]);
  });

  it("leaves an operator's own choice alone, on the command line or in NODE_OPTIONS, in either spelling", () => {
    expect(withHeapFloor(['--initial-old-space-size=256'])).toEqual(['--initial-old-space-size=256']);
    expect(withHeapFloor(['--initial_old_space_size=16'])).toEqual(['--initial_old_space_size=16']);
    expect(withHeapFloor([], '--max-old-space-size=512 --initial-old-space-size=32')).toEqual([]);
  });

  it('is not fooled by a flag that only starts the same way', () => {
    expect(withHeapFloor(['--initial-old-space-sizes=1'])).toEqual(['--initial-old-space-sizes=1', HEAP_FLOOR_FLAG]);
  });
});
