# The peer both proxy benchmarks measure Drover against: nginx as a reverse proxy to a session's
# Unix socket, with keep-alive upstream connections; NGINX_WORKERS workers (run.sh: one per core,
# as droverd has one event loop per core; default 1).
# Usage: nginx_conf WORK_DIR PORT SESSION_SOCKET [foreground] > nginx.conf
# The session's socket sits in a folder only droverd's user (root here) can enter: nginx's
# worker runs as root too to reach it. `foreground`: one process, not a daemon (for valgrind).
nginx_conf() {
    local work=$1 port=$2 socket=$3
    [ "${4:-}" = foreground ] && printf 'daemon off;\nmaster_process off;\n'
    cat <<CONF
worker_processes $([ "${4:-}" = foreground ] && echo 1 || echo "${NGINX_WORKERS:-1}");
user root;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
    access_log off;
    upstream session { server unix:$socket; keepalive 64; }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://session;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$remote_addr;
        }
    }
}
CONF
}
