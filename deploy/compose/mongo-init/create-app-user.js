// Creates the application user that workers and the coordinator log in as.
//
// The official mongo image runs this once, as the root user, on the first start of an
// empty data volume (docker-compose.yml mounts this folder on
// /docker-entrypoint-initdb.d).  The user lives in the admin database (hence
// authSource=admin in HPO_MONGO_URL) and may read and write only the hpo database.
// Changing the credentials in .env later does not change this user: see docs/deploy.md.
const user = process.env.HPO_MONGO_USER;
const password = process.env.HPO_MONGO_PASSWORD;
const database = process.env.HPO_MONGO_DB || "hpo";
if (!user || !password) {
  throw new Error("HPO_MONGO_USER and HPO_MONGO_PASSWORD must be set");
}
db.getSiblingDB("admin").createUser({
  user: user,
  pwd: password,
  roles: [{ role: "readWrite", db: database }],
});
print(`created user ${user} with readWrite on ${database}`);
