# The publishing half of the Orbited Rails plugin ("Orbited on Rails", 0.7 era),
# kept to its API: Orbited.send_data(channel, data, headers = {}) sends to
# /topic/<channel> on the STOMP broker the browsers are subscribed through.
#
# In a Rails app this file is lib/orbited.rb and a controller calls
#   Orbited.send_data('hello', {text: 'Hi'}.to_json)
# Settings mirror config/orbited.yml: stomp_host, stomp_port, stomp_user, stomp_password.
require 'stomp'

module Orbited
  @config = {
    stomp_host: ENV.fetch('STOMP_HOST', '127.0.0.1'),
    stomp_port: Integer(ENV.fetch('STOMP_PORT', '61613')),
    stomp_user: ENV.fetch('STOMP_USER', 'guest'),
    stomp_password: ENV.fetch('STOMP_PASSWORD', 'guest'),
  }

  class << self
    attr_reader :config

    # One connection per call, as the plugin did: simple and fine for a few
    # events a second.  A busy app keeps one Stomp::Client open instead.
    def send_data(channel, data, headers = {})
      client = Stomp::Client.new(config[:stomp_user], config[:stomp_password],
                                 config[:stomp_host], config[:stomp_port], false)
      client.publish("/topic/#{channel}", data.to_s, headers)
      client.close
      true
    rescue Errno::ECONNREFUSED
      warn "The Orbited server appears to be down! (no STOMP broker at " \
           "#{config[:stomp_host]}:#{config[:stomp_port]})"
      false
    end
  end
end
