// MongoDB setup for IPSP, run by the mongodb-setup Job with the root account; safe to run again.
//
// 1. Users: the writer (stream job) and the reader (API) take their names and passwords from
//    the URIs in their own Secrets (APP_MONGO_URI, API_MONGO_URI), so each credential is written
//    down once. An existing user gets its password and roles reset (that is how rotation works).
// 2. Indexes: the contract's (CONTRACTS.md section 3) plus the time fields `ipsp prune` deletes by.
//    The stream job also creates them itself; the API's read-only user cannot, so they are made
//    here. tests/unit/test_k8s.py checks this list equals ipsp.mongo.INDEXES.
const dbName = process.env.IPSP_MONGO_DB;

// BEGIN INDEXES
const INDEXES = {
  "analysis_results": [{"camera_id": 1, "event_time": 1}, {"event_time": 1}],
  "traffic_windows": [{"camera_id": 1, "window_start": 1}, {"window_start": 1}],
  "dead_letters": [{"created_at": 1}, {"stage": 1}],
  "pipeline_progress": [{"query": 1, "batch_id": 1}, {"finished_at": 1}]
};
// END INDEXES

function credentials(variable) {
  const uri = process.env[variable] || "";
  const match = /^mongodb(?:\+srv)?:\/\/([^:@\/]+):([^@\/]+)@/.exec(uri);
  if (!match) {
    throw new Error(variable + " must be a mongodb:// URI with a user and a password");
  }
  return { user: decodeURIComponent(match[1]), pwd: decodeURIComponent(match[2]) };
}

function ensureUser(variable, roles) {
  const admin = db.getSiblingDB("admin");
  const c = credentials(variable);
  if (admin.getUser(c.user)) {
    admin.updateUser(c.user, { pwd: c.pwd, roles: roles });
    print("updated user " + c.user);
  } else {
    admin.createUser({ user: c.user, pwd: c.pwd, roles: roles });
    print("created user " + c.user);
  }
}

ensureUser("APP_MONGO_URI", [{ role: "readWrite", db: dbName }]);
ensureUser("API_MONGO_URI", [{ role: "read", db: dbName }]);

const target = db.getSiblingDB(dbName);
for (const [collection, specs] of Object.entries(INDEXES)) {
  for (const keys of specs) {
    print(collection + ": index " + target.getCollection(collection).createIndex(keys));
  }
}
