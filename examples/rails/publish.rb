#!/usr/bin/env ruby
# Push to the browsers the way a Rails controller would: Orbited.send_data.
#
#   ruby publish.rb [--port 61613] CHANNEL MESSAGE       # one message
#   ruby publish.rb [--port 61613] --every 5 CHANNEL TEXT  # "TEXT #1", "TEXT #2", ... every 5 s
require 'optparse'
require 'json'

every = nil
OptionParser.new do |opts|
  opts.banner = 'usage: ruby publish.rb [--port PORT] [--every SECONDS] CHANNEL MESSAGE'
  opts.on('--port PORT', Integer, 'STOMP port (default 61613)') { |p| ENV['STOMP_PORT'] = p.to_s }
  opts.on('--every SECONDS', Float, 'repeat, numbering the messages') { |s| every = s }
end.parse!
abort 'usage: ruby publish.rb [--port PORT] [--every SECONDS] CHANNEL MESSAGE' unless ARGV.size == 2
channel, message = ARGV

require_relative 'orbited'

def payload(text)
  { text: text, sent: Time.now.strftime('%H:%M:%S') }.to_json
end

if every
  count = 0
  trap('TERM') { exit }
  trap('INT') { exit }
  loop do
    count += 1
    Orbited.send_data(channel, payload("#{message} ##{count}"), 'content-type' => 'application/json')
    sleep every
  end
else
  exit(Orbited.send_data(channel, payload(message), 'content-type' => 'application/json') ? 0 : 1)
end
