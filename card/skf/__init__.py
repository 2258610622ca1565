"""Cards and tokens behind a vendor SKF (GM/T 0016) library, through ctypes.

On Linux/UOS/Kylin, Chinese crypto keys are used through the vendor's SKF shared library
rather than through public APDUs. This package loads such a library and drives it:

* `types` — the standard's types and packed structures, and their conversions;
* `sar` — the return codes and the `card.errors` type each one means;
* `binding` — `SkfLibrary`, one typed method per SKF call;
* `discovery` — finding the application and container that hold the signing key;
* `driver` — `SkfDriver`, the `CardDriver` protocol over the library;
* `events` — `SkfDeviceMonitor`, insertions and removals (SKF_WaitForDevEvent or polling).

Threads: the binding is not thread-safe. Vendor libraries keep global state behind their
handles and talk to one device channel without locks, and some hang when the key is
pulled mid-call, so every call is made from one thread (the agent's card owner thread),
which can be abandoned if a call hangs. The only calls from another thread are
`SkfDeviceMonitor.wake()` (which does not call the library) and the monitor's own alarm
thread calling SKF_CancelWaitForDevEvent, the one function the standard makes for that.
"""
